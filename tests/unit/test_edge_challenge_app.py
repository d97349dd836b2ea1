"""The human check through the whole app: the edge's challenge rule, the check's routes, what
is never challenged, failed checks feeding the abuse detector, and several replicas."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gatehouse.app import create_app
from gatehouse.edge.challenge import VERIFY_PATH
from gatehouse.edge.clearance import COOKIE
from tests.support.services import REDIS_URL
from tests.unit.conftest import make_settings
from tests.unit.test_edge_challenge import BROWSER, Page, answer, read_page, solve

EVERYTHING = {"rules": [{"action": "challenge", "path": "^/", "name": "all", "difficulty": 8}]}
MakeClient = Callable[..., Any]


async def browser(gateway_client: MakeClient, **edge: Any) -> httpx.AsyncClient:
    c: httpx.AsyncClient = await gateway_client(edge={**EVERYTHING, **edge})
    c.headers.update(BROWSER)
    return c


def metric(text: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gatehouse_edge_challenges_total{") and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rpartition(" ")[2])
    return total


async def test_a_challenge_rule_guards_the_sign_in_page(gateway_client: MakeClient) -> None:
    c = await browser(gateway_client)
    first = await c.get("/login")
    page = read_page(first)
    assert re.fullmatch(r"[0-9a-f]{16}", first.headers["gatehouse-ray"])
    assert page.next == "/login" and page.difficulty == 8
    assert first.headers["x-request-id"].startswith("req_")

    verified = await answer(c, page)
    assert verified.status_code == 303
    checked = await c.get(verified.headers["location"])
    assert checked.status_code == 303 and checked.headers["location"] == "/login"
    signed_in = await c.get("/login")
    assert signed_in.status_code == 200 and "<h1>Sign in</h1>" in signed_in.text
    # the sign-in form posts through the same rule, cleared (to the form's own CSRF check)
    posted = await c.post("/login", data={"email": "x@example.com"})
    assert "gatehouse-mitigated" not in posted.headers and "csrf_failed" in posted.text

    text = (await c.get("/metrics")).text
    assert metric(text, rule="all", result="issued", reason="page") == 1
    assert metric(text, rule="all", result="solved") == 1


async def test_scripts_get_the_json_twin(gateway_client: MakeClient) -> None:
    c = await browser(gateway_client)
    r = await c.get("/account", headers={"accept": "application/json"})
    assert r.status_code == 403 and r.headers["gatehouse-mitigated"] == "challenge"
    assert r.json()["error"]["code"] == "challenge_required"
    assert r.json()["ray_id"] == r.headers["gatehouse-ray"]
    r = await c.get("/account", headers={"sec-fetch-mode": "cors"})
    assert r.status_code == 403 and r.headers["content-type"] == "application/json"


async def test_programs_feeds_and_status_json_are_never_challenged(
        gateway_client: MakeClient) -> None:
    c = await browser(gateway_client)
    # API paths with a key: identity checks it instead (test_edge_challenge_keys.py has the
    # rest: valid keys, anonymous callers in open mode, keys on web paths)
    keyed = await c.get("/v1/models", headers={"authorization": "Bearer gh-x-nope"})
    assert keyed.status_code == 401 and "gatehouse-mitigated" not in keyed.headers
    # the status JSON and feeds (not served yet: a 404, but never a challenge)
    for path in ("/api/v2/summary.json", "/api/v2/status.json", "/status/feed.atom",
                 "/history.rss", "/healthz", "/metrics"):
        r = await c.get(path)
        assert "gatehouse-mitigated" not in r.headers, path
    # nor are the check's own routes
    r = await c.get("/_gatehouse/challenge/check")
    assert r.status_code == 303 and "gatehouse-mitigated" not in r.headers
    text = (await c.get("/metrics")).text
    assert metric(text, result="issued") == 0


async def test_failed_checks_count_towards_a_ban(gateway_client: MakeClient) -> None:
    c = await browser(gateway_client, detector={"max_challenge_failures": 3})
    for _ in range(4):
        r = await c.post(VERIFY_PATH, data={"token": "forged", "counter": "1", "next": "/"})
        assert r.status_code == 403 and "challenge_required" in r.text
    for _ in range(100):  # the ban is written in the background
        banned = await c.get("/login")
        if "1020" in banned.text:
            break
        await asyncio.sleep(0.02)
    assert banned.status_code == 403 and "1020" in banned.text
    text = (await c.get("/metrics", headers={"accept": "text/plain"})).text
    assert metric(text, result="failed", reason="forged") == 4


async def test_a_clearance_from_one_replica_is_good_on_another(tmp_path: Path) -> None:
    apps = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        app = create_app(make_settings(folder, edge=EVERYTHING,
                                       storage={"state_url": REDIS_URL}))
        await app.startup()
        apps.append(app)
    a, b = (httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 1)),
                              base_url="http://gw", headers=BROWSER) for app in apps)
    try:
        page = read_page(await a.get("/login"))
        counter = solve(page.token, page.difficulty)
        assert (await answer(a, page, counter)).status_code == 303
        b.cookies.set(COOKIE, a.cookies[COOKIE])
        assert (await b.get("/login")).status_code == 200
        # the same answer handed to the other replica: the nonce is claimed in Redis
        replay = await answer(b, Page(page.token, page.difficulty, "/", ""), counter)
        assert replay.status_code == 403 and "already used" in replay.text
    finally:
        for client in (a, b):
            await client.aclose()
        for app in apps:
            await app.aclose()
