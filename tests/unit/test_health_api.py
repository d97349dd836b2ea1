"""The health endpoints in-process: ``GET /admin/v1/health`` (any filter) and ``GET /v1/health``
(the caller's org only: another org's project or org answers the same 404 as an unknown one),
and their 4xx for bad input."""

from __future__ import annotations

from typing import Any

from tests.unit.test_telemetry_records import CHAT, HELLO, Site, org_key, site  # noqa: F401

BROKEN = {**HELLO, "max_tokens": -1}  # a 400 the schema stage answers


async def traffic(s: Site, key: str, ok: int, bad: int) -> None:
    for body, n in ((HELLO, ok), (BROKEN, bad)):
        for _ in range(n):
            await s.client.post(CHAT, json=body, headers={"authorization": f"Bearer {key}"})


async def flushed(s: Site) -> None:
    rollups = s.app.routes[CHAT].pipeline.stages[0].rollups  # type: ignore[attr-defined]
    await rollups.flush()


async def admin(s: Site, query: str) -> Any:
    return await s.client.get(f"/admin/v1/health{query}",
                              headers={"authorization": f"Bearer {s.admin_key}"})


async def test_admin_sees_any_filter(site: Site) -> None:  # noqa: F811
    a, b = await org_key(site, "org-a"), await org_key(site, "org-b")
    await traffic(site, a, 3, 2)
    await traffic(site, b, 4, 0)
    await flushed(site)
    r = await admin(site, "?window=5m&org=org-a")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["object"] == "health" and view["window"] == "5m"
    assert view["filter"]["org"] == "org-a" and view["filter_ids"]["org"].startswith("org_")
    assert view["requests"] == 5 and view["errors"] == 2
    assert view["error_classes"]["client_error"] == {"count": 2, "share": 0.4}
    assert view["latency_ms"]["p50"] > 0 and len(view["series"]["points"]) == 5
    assert view["tokens"]["prompt"] > 0
    # the 400s were refused before the model was read: they count under no model
    assert [(m["model"], m["requests"]) for m in view["by_model"]] == [("demo", 3), (None, 2)]
    assert (await admin(site, "?window=5m&org=org-a&model=demo")).json()["errors"] == 0
    everyone = (await admin(site, "?model=demo&window=15m&component=api")).json()
    assert everyone["requests"] == 7 and everyone["by_model"][0]["model"] == "demo"
    assert (await admin(site, "?project=org-b/bot&window=5m")).json()["requests"] == 4
    for query, param in (("?key=key_1", "key"), ("?endpoint=x", "endpoint"),
                         ("?window=2h", "window"), ("?colour=red", "colour")):
        r = await admin(site, query)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, query
    r = await admin(site, "?org=nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await site.client.get("/admin/v1/health")).status_code == 401


async def test_customers_see_their_own_org_only(site: Site) -> None:  # noqa: F811
    a, b = await org_key(site, "org-a"), await org_key(site, "org-b")
    await site.identity.accounts.create_project("org-b/other")
    await traffic(site, a, 2, 1)
    await traffic(site, b, 5, 5)
    await flushed(site)

    async def ask(query: str, key: str = a) -> Any:
        return await site.client.get(f"/v1/health{query}",
                                     headers={"authorization": f"Bearer {key}"})

    r = await ask("?window=5m")
    assert r.status_code == 200, r.text
    mine = r.json()
    assert mine["requests"] == 3 and mine["errors"] == 1 and mine["filter"]["org"] is None
    assert (await ask("?window=5m&project=bot")).json()["requests"] == 3
    assert (await ask("?window=5m&org=org-a")).json()["requests"] == 3
    assert (await ask("?window=5m", b)).json()["requests"] == 10
    answers = {}
    for query in ("?org=org-b", "?org=no-such-org", "?project=org-b/other", "?project=other",
                  "?project=no-such-project"):
        r = await ask(query)
        assert r.status_code == 404, query
        error = r.json()["error"]
        assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
        answers[query] = (error["param"], error["message"].replace(query.split("=")[1], "…"))
    assert len(set(answers.values())) == 2  # one wording per param: "not yours" = "unknown"
    r = await ask("?key=mine")
    assert r.status_code == 400 and r.json()["error"]["param"] == "key"
    r = await ask("?window=1y")
    assert r.status_code == 400 and "5m" in r.json()["error"]["message"]
    r = await ask("?%ff=1")
    assert r.status_code == 400
    assert (await site.client.get("/v1/health")).status_code == 401
    r = await site.client.post("/v1/health", headers={"authorization": f"Bearer {a}"})
    assert r.status_code == 405


async def test_the_page_shows_what_the_json_says(site: Site) -> None:  # noqa: F811
    a = await org_key(site, "org-a")
    await traffic(site, a, 4, 1)
    await flushed(site)
    auth = {"authorization": f"Bearer {site.admin_key}"}
    r = await site.client.get("/admin/health?org=org-a&window=15m", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src" not in r.headers["content-security-policy"]
    view = (await admin(site, "?org=org-a&window=15m")).json()
    html = r.text
    assert f'<dd id="requests">{view["requests"]}</dd>' in html
    assert '<span id="error-rate">20.00%</span>' in html and "org = org-a" in html
    assert html.count('class="bar"') == 2 * len(view["series"]["points"]) == 30
    assert '<tr data-class="client_error">' in html and "within one bucket" in html
    bad = await site.client.get("/admin/health?window=2h", headers=auth)
    assert bad.status_code == 400 and "5m, 15m" in bad.text and "<h1>" in bad.text
    assert (await site.client.get("/admin/health")).status_code == 401
