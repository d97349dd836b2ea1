"""The usage API in-process: ``GET /v1/organization/usage/completions`` (the caller's org) and
``/admin/v1/organization/usage/completions`` (every org) count what the requests used, from
the rollups for any bucket width and from the usage history per key and user per day; what
a source cannot answer exactly, and every bad input, is an OpenAI-shaped 4xx naming the
parameter."""

from __future__ import annotations

import time
from typing import Any

from gatehouse.quota.stage import QuotaStage
from tests.unit.test_health_api import flushed
from tests.unit.test_telemetry_records import CHAT, HELLO, Site, site  # noqa: F401

PATH = "/v1/organization/usage/completions"


async def setup(s: Site) -> dict[str, Any]:
    """Two orgs' traffic, written: what each key sent, by the answers' usage."""
    sent: dict[str, Any] = {}
    for org, n in (("org-a", 3), ("org-b", 2)):
        await s.identity.accounts.create_org(org, "standard")
        _, project = await s.identity.accounts.create_project(f"{org}/bot")
        key, row = await s.identity.accounts.create_key(f"{org}/bot")
        prompt = completion = 0
        for _ in range(n):
            r = await s.client.post(CHAT, json=HELLO, headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200
            prompt += r.json()["usage"]["prompt_tokens"]
            completion += r.json()["usage"]["completion_tokens"]
        bad = await s.client.post(CHAT, json={**HELLO, "max_tokens": -1},
                                  headers={"authorization": f"Bearer {key}"})
        assert bad.status_code == 400  # counted as a request, not a model request
        sent[org] = {"key": key, "key_id": row.id, "project_id": project.id, "n": n,
                     "prompt": prompt, "completion": completion}
    await flushed(s)
    quota = next(st for st in s.app.routes[CHAT].pipeline.stages if isinstance(st, QuotaStage))
    assert quota.book is not None
    await quota.book.flush()
    return sent


async def get(s: Site, key: str, query: str, path: str = PATH) -> Any:
    return await s.client.get(f"{path}?{query}", headers={"authorization": f"Bearer {key}"})


def totals(page: dict[str, Any]) -> tuple[int, int, int]:
    results = [r for b in page["data"] for r in b["results"]]
    return (sum(r["num_model_requests"] for r in results),
            sum(r["input_tokens"] for r in results), sum(r["output_tokens"] for r in results))


async def test_each_width_counts_what_was_sent(site: Site) -> None:  # noqa: F811
    sent = await setup(site)
    a = sent["org-a"]
    start = int(time.time()) - 600
    for width in ("1m", "1h", "1d"):
        r = await get(site, a["key"], f"start_time={start}&bucket_width={width}&limit=20")
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["object"] == "page" and page["data"][0]["object"] == "bucket"
        assert totals(page) == (a["n"], a["prompt"], a["completion"]), width  # own org only
        result = next(r for b in page["data"] for r in b["results"])
        assert result["object"] == "organization.usage.completions.result"
        assert result["project_id"] is None and result["model"] is None
        assert result["input_cached_tokens"] == 0 and result["batch"] is None
    grouped = (await get(site, a["key"], f"start_time={start}&group_by=model"
                         "&group_by=project_id&group_by=api_key_id")).json()
    [result] = [r for b in grouped["data"] for r in b["results"]]
    assert (result["model"], result["project_id"], result["api_key_id"]) == (
        "demo", a["project_id"], a["key_id"])
    assert result["num_model_requests"] == a["n"] and result["input_tokens"] == a["prompt"]
    by_key = (await get(site, a["key"], f"start_time={start}&api_key_ids={a['key_id']}")).json()
    assert totals(by_key) == (a["n"], a["prompt"], a["completion"])
    batch = (await get(site, a["key"], f"start_time={start}&batch=true")).json()
    assert totals(batch) == (0, 0, 0)
    # the operator: every org, any project
    b = sent["org-b"]
    every = (await get(site, site.admin_key, f"start_time={start}",
                       "/admin" + PATH)).json()
    assert totals(every) == (a["n"] + b["n"], a["prompt"] + b["prompt"],
                             a["completion"] + b["completion"])
    one = (await get(site, site.admin_key, f"start_time={start}&project_ids={b['project_id']}",
                     "/admin" + PATH)).json()
    assert totals(one) == (b["n"], b["prompt"], b["completion"])


async def test_pages_follow_their_cursor(site: Site) -> None:  # noqa: F811
    sent = await setup(site)
    key, start = sent["org-a"]["key"], int(time.time()) - 299
    first = (await get(site, key, f"start_time={start}&bucket_width=1m&limit=2")).json()
    assert len(first["data"]) == 2 and first["has_more"] and first["next_page"]
    seen, page = list(first["data"]), first
    while page["has_more"]:
        r = await get(site, key, f"start_time={start}&bucket_width=1m&limit=2"
                                 f"&page={page['next_page']}")
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["data"]
    starts = [b["start_time"] for b in seen]
    assert starts == sorted(set(starts)) and starts[0] == start - start % 60
    assert all(b["end_time"] - b["start_time"] == 60 for b in seen)
    assert sum(r["num_model_requests"] for b in seen for r in b["results"]) == 3
    other = await get(site, key, f"start_time={start}&bucket_width=1h&page={first['next_page']}")
    assert other.status_code == 400 and other.json()["error"]["param"] == "page"


BAD = [
    ("", "start_time"),
    ("start_time=abc", "start_time"),
    ("start_time=-5", "start_time"),
    ("start_time=99999999999&end_time=99999999999999", "start_time"),
    ("start_time=100&end_time=99999999999", "end_time"),
    ("start_time=100&end_time=100", "end_time"),
    ("start_time=100&bucket_width=2h", "bucket_width"),
    ("start_time=100&bucket_width=1d&limit=32", "limit"),
    ("start_time=100&bucket_width=1m&limit=1441", "limit"),
    ("start_time=100&limit=0", "limit"),
    # found by hypothesis (test_parser_properties.py): leading zeros hid the size
    ("start_time=100&bucket_width=1d&limit=0000099", "limit"),
    ("start_time=100&group_by=color", "group_by"),
    ("start_time=100&group_by=api_key_id&bucket_width=1h", "group_by"),
    ("start_time=100&group_by=user_id&bucket_width=1m", "group_by"),
    ("start_time=100&api_key_ids=key_x&bucket_width=1m", "api_key_ids"),
    ("start_time=100&page=junk", "page"),
    ("start_time=100&page=page_Zm9v", "page"),
    ("start_time=100&batch=maybe", "batch"),
    ("start_time=100&start_time=200", "start_time"),
    ("start_time=100&colour=red", "colour"),
    ("start_time=100&models=", "models"),
    ("start_time=100&bucket_width=1m", "start_time"),  # minutes are not kept that long
    ("start_time=100&project_ids=" + "p," * 101, "project_ids"),
]


async def test_bad_queries_name_their_param(site: Site) -> None:  # noqa: F811
    await site.identity.accounts.create_org("org-a", "standard")
    await site.identity.accounts.create_project("org-a/bot")
    key, _ = await site.identity.accounts.create_key("org-a/bot")
    for query, param in BAD:
        for who, path in ((key, PATH), (site.admin_key, "/admin" + PATH)):
            r = await get(site, who, query, path)
            assert r.status_code == 400, (query, path, r.text)
            error = r.json()["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error", (
                query, error)
            assert r.headers["x-request-id"]


async def test_another_orgs_ids_are_not_found(site: Site) -> None:  # noqa: F811
    sent = await setup(site)
    a, b = sent["org-a"], sent["org-b"]
    start = int(time.time()) - 600
    answers = {}
    for name, value in (("project_ids", b["project_id"]), ("project_ids", "proj_nobody"),
                        ("api_key_ids", b["key_id"])):
        r = await get(site, a["key"], f"start_time={start}&{name}={value}")
        assert r.status_code == 404, r.text
        answers[value] = r.json()["error"]
        assert answers[value]["param"] == name and answers[value]["code"] == "not_found"
    assert answers[b["project_id"]]["message"].replace(b["project_id"], "X") == \
        answers["proj_nobody"]["message"].replace("proj_nobody", "X")
    r = await site.client.get(f"{PATH}?start_time={start}")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
