"""The edge in the running app (in-process, with a chosen client address): forged headers,
rule order, 1020 answers (JSON and page), Ray IDs, bans, mounts and 404s all screened."""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from gatehouse.admin.edge import BanOut, RuleOut
from gatehouse.admin.models import PAGE_PIECE, Page
from gatehouse.app import create_app
from gatehouse.config import EdgeSettings
from gatehouse.edge.bans import PAGE_BANS, Bans
from gatehouse.edge.detector import Detector
from gatehouse.edge.rays import RayLog
from gatehouse.edge.rulebook import RuleAdmin, RuleBook
from gatehouse.edge.screen import Edge
from gatehouse.identity.service import IdentityService
from gatehouse.server import Gateway
from gatehouse.state import open_state
from gatehouse.state.base import StateError
from gatehouse.store.edge import EdgeRecords
from gatehouse.telemetry.metrics import Metrics
from tests.support.loops import json_pieces_watched
from tests.unit.conftest import make_settings
from tests.unit.test_web_sessions import sign_in

DENY_FORGED = {"edge": {"rules": [{"action": "deny", "cidr": "203.0.113.0/24"}]}}


async def test_in_process_spoofed_header_from_untrusted_peer_ignored(
        gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    gw = await gateway_client(**DENY_FORGED)  # peer 10.0.0.1, no trusted proxies
    r = await gw.get("/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
    assert r.status_code == 200
    trusted = await gateway_client(edge={**DENY_FORGED["edge"],
                                         "trusted_proxies": ["10.0.0.0/8"]})
    r = await trusted.get("/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "1020"
    # the forged leftmost entry is not what a trusted proxy appended: no effect
    r = await trusted.get("/v1/models",
                          headers={"x-forwarded-for": "203.0.113.9, 198.51.100.1"})
    assert r.status_code == 200


# -- the app with an admin key, seen from chosen addresses ----------------------------------
RAY = re.compile(r"^[0-9a-f]{16}$")
HELLO = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Site:
    app: Gateway
    identity: IdentityService
    admin_key: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def at(self, ip: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(ip, 5555)),
                              base_url="http://gw")
        self.clients.append(c)
        return c

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_key}"}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Site] = []

    async def make(**sections: Any) -> Site:
        folder = tmp_path / f"s{len(made)}"
        folder.mkdir()
        settings = make_settings(folder, **sections)
        identity = IdentityService(settings)
        app = create_app(settings, identity=identity)
        await app.startup()
        plain, _ = await identity.accounts.create_key(None, scope="admin")
        made.append(Site(app, identity, plain))
        return made[-1]

    yield make
    for s in made:
        for c in s.clients:
            await c.aclose()
        await s.app.aclose()


def denied(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    assert body["error"] == {"message": body["error"]["message"], "type": "access_denied",
                             "param": None, "code": "1020"}
    assert RAY.match(body["ray_id"]) and r.headers["gatehouse-ray"] == body["ray_id"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


RULES = {"rules": [
    {"action": "allow", "cidr": "192.0.2.10"},
    {"action": "deny", "cidr": "192.0.2.0/24", "name": "testnet"},
    {"action": "deny", "user_agent": "(?i)evilbot", "name": "evilbot"},
    {"action": "deny", "path": r"^/wp-admin", "name": "probes"},
]}


async def test_deny_answers_1020_with_a_unique_ray_everywhere(site: Any) -> None:
    s = await site(edge=RULES)
    bad, good, allowed = s.at("192.0.2.5"), s.at("198.51.100.5"), s.at("192.0.2.10")
    rays = set()
    # the API pipeline, the model list, a 404, the web pages and the admin API: all screened
    for method, path in [("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                         ("GET", "/nope"), ("GET", "/login"), ("GET", "/account"),
                         ("GET", "/admin/v1/orgs"), ("DELETE", "/v1/models")]:
        r = await bad.request(method, path, json=HELLO if method == "POST" else None)
        rays.add(denied(r)["ray_id"])
    assert len(rays) == 7
    assert (await allowed.get("/v1/models")).status_code == 200  # allow ranks first
    assert (await good.get("/v1/models")).status_code == 200
    denied(await good.get("/v1/models", headers={"user-agent": "EvilBot/2.0"}))
    denied(await good.get("/wp-admin/setup.php"))
    assert (await good.get("/nope")).status_code == 404  # not blocked: an ordinary 404
    # probes stay reachable for load balancers
    assert (await bad.get("/healthz")).status_code == 200


async def test_1020_page_for_browsers(site: Any) -> None:
    s = await site(edge=RULES)
    r = await s.at("192.0.2.5").get("/login", headers={"accept": "text/html"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
    page = r.text
    ray = r.headers["gatehouse-ray"]
    assert "Access denied" in page and "Error 1020" in page
    assert f'<code id="ray-id">{ray}</code>' in page
    assert '<code id="client-ip">192.0.2.5</code>' in page
    assert r.headers["x-request-id"] in page
    for advice in ("may not be your fault", "VPN", "Try another network", "Contact support"):
        assert advice in page
    assert "testnet" not in page  # the rule's name is for the operator, not the page


async def test_rays_are_logged_and_searchable(site: Any) -> None:
    s = await site(edge=RULES)
    r = await s.at("192.0.2.5").get("/v1/models", headers={"user-agent": "curl/8"})
    ray = denied(r)["ray_id"]
    admin = s.at("127.0.0.1")
    # before the batch is written (from the buffer) and after
    for _ in range(2):
        found = (await admin.get(f"/admin/v1/edge/rays/{ray}", headers=s.admin)).json()
        assert found["ray"] == ray and found["ip"] == "192.0.2.5"
        assert found["network"] == "192.0.2.0/24" and found["rule"] == "testnet"
        assert found["path"] == "/v1/models" and found["user_agent"] == "curl/8"
        assert found["action"] == "deny" and found["reason"] == "rule testnet"
        await s.app.routes["/v1/models"].pipeline.stages[1].edge.rays.flush()
    assert (await EdgeRecords(s.identity.store).ray(ray)) is not None
    r = await admin.get("/admin/v1/edge/rays/0123456789abcdef", headers=s.admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await admin.get("/admin/v1/edge/rays/not-a-ray", headers=s.admin)
    assert r.status_code == 400 and r.json()["error"]["param"] == "ray"


# the writers that batch in the background (the Ray log, the status page's detector and
# lease, the rollups): their statements, once a second or so, are not the denials'
BACKGROUND = re.compile(r"^\s*(?:INSERT INTO|DELETE FROM|UPDATE|SELECT\s.*?\sFROM)\s+"
                        r"(?:edge_rays|status_\w+|rollup_\w+)\b", re.DOTALL)


async def test_denied_and_banned_answers_touch_no_sql(site: Any) -> None:
    s = await site(edge=RULES, identity={"require_key": True},
                   telemetry={"access_log": False, "request_log": False})
    bad = s.at("192.0.2.5")
    await bad.get("/v1/models")
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not BACKGROUND.match(statement):
            sent.append(statement)

    for engine in s.identity.store.sync_engines:
        sqlalchemy.event.listen(engine, "before_cursor_execute", seen)
    for _ in range(50):
        denied(await bad.post("/v1/chat/completions", json=HELLO,
                              headers={"authorization": "Bearer gh-unknown-key"}))
    await s.identity.state.put("x", b"y", 1)
    edge = s.app.routes["/v1/models"].pipeline.stages[1].edge
    await edge.bans.ban("198.51.100.77", "testing", 60)
    banned = s.at("198.51.100.77")
    for _ in range(50):
        body = denied(await banned.get("/v1/models"))
        assert "operators of this service have blocked" in body["error"]["message"]
    for engine in s.identity.store.sync_engines:
        sqlalchemy.event.remove(engine, "before_cursor_execute", seen)
    assert sent == []
    r = await banned.get("/v1/models")
    assert 55 <= int(r.headers["retry-after"]) <= 60


async def test_a_burst_gets_banned(site: Any) -> None:
    s = await site(edge={"detector": {"max_requests_per_address": 20, "ban_seconds": 60}})
    burst, other = s.at("203.0.113.1"), s.at("203.0.113.9")
    statuses = [(await burst.get("/v1/models")).status_code for _ in range(25)]
    assert statuses == [200] * 20 + [403] * 5
    assert (await other.get("/v1/models")).status_code == 200
    # the shared ban is written in the background: polled
    for _ in range(200):
        bans = (await s.at("127.0.0.1").get("/admin/v1/edge/bans",
                                            headers=s.admin)).json()["data"]
        if bans:
            break
        await asyncio.sleep(0.05)
    assert [(b["subject"], b["reason"], b["strikes"]) for b in bans] == \
        [("203.0.113.1", "more than 20 requests in 10 s", 1)]
    assert 59 <= bans[0]["until"] - bans[0]["at"] <= 61


async def test_401s_count_towards_a_ban(site: Any) -> None:
    s = await site(edge={"detector": {"max_unauthorized": 3}}, identity={"require_key": True})
    guesser = s.at("203.0.113.2")
    for _ in range(4):
        r = await guesser.get("/v1/models", headers={"authorization": "Bearer gh-wrong"})
        assert r.status_code == 401
    denied(await guesser.get("/v1/models"))
    # failed sign-ins on the web form count the same way (the guard sees the 401)
    web = s.at("203.0.113.3")
    for _ in range(4):
        r = await sign_in(web, "a@b.c", "wrong-password")
        assert r.status_code == 401, r.text
    denied(await web.get("/v1/models"))


async def test_listing_thousands_of_rules_lets_requests_through_and_reads_the_same(
        site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /admin/v1/edge/rules with thousands of rules: made into models and dumped at once,
    10,000 held the worker's loop ~90 ms (p99 at 500 req/s 74 ms). The page is made and
    serialized a piece at a time, other requests served between the pieces — and reads
    exactly as the pydantic Page of RuleOut documented in the OpenAPI document."""
    config_rules = [{"action": "deny", "cidr": f"10.{i >> 8}.{i & 255}.0/24",
                     **({"name": f"n{i}"} if i % 3 == 0 else {}),
                     **({"user_agent": "bot", "path": "^/x"} if i % 7 == 0 else {})}
                    for i in range(3_000)]
    s = await site(edge={"rules": config_rules})
    admin = s.at("127.0.0.1")
    for i in range(3):
        r = await admin.post("/admin/v1/edge/rules", headers=s.admin, json={
            "action": "challenge", "cidr": f"198.51.100.{i}", "note": f"é {i}",
            "difficulty": 12})
        assert r.status_code == 201, r.text
    async with json_pieces_watched(monkeypatch) as seen:
        r = await admin.get("/admin/v1/edge/rules", headers=s.admin)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert len(seen) == -(-3_003 // PAGE_PIECE)
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))  # between
    rows = await RuleAdmin(s.identity.settings.edge, EdgeRecords(s.identity.store),
                           s.identity.state, s.identity.settings.base_dir).listing()
    assert r.json() == Page[RuleOut](data=[RuleOut.of(row) for row in rows]).model_dump(
        mode="json")
    data = r.json()["data"]
    assert len(data) == 3_003 and data[0]["id"] == "n0" and data[1]["id"] == "config#1"
    assert data[-1]["source"] == "store" and data[-1]["note"] == "é 2"
    assert isinstance(data[-1]["created_at"], int)
    assert "Page_RuleOut_" in (await admin.get("/admin/v1/openapi.json",
                                               headers=s.admin)).text


async def test_admin_rules_apply_at_once_and_refuse_bad_input(site: Any) -> None:
    s = await site()
    admin, visitor = s.at("127.0.0.1"), s.at("198.51.100.20")
    assert (await visitor.get("/v1/models")).status_code == 200
    r = await admin.post("/admin/v1/edge/rules", headers=s.admin,
                         json={"action": "deny", "cidr": "198.51.100.0/24", "note": "abuse",
                               "name": "abusers"})
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    for _ in range(100):  # the broadcast makes the replica rebuild in the background
        if (await visitor.get("/v1/models")).status_code == 403:
            break
        await asyncio.sleep(0.02)
    denied(await visitor.get("/v1/models"))
    listed = (await admin.get("/admin/v1/edge/rules", headers=s.admin)).json()["data"]
    assert [(x["id"], x["rule"]["cidr"], x["note"]) for x in listed] == \
        [(rule_id, "198.51.100.0/24", "abuse")]
    for body, param in [({"action": "deny"}, None), ({"action": "nope", "cidr": "1.2.3.4"},
                                                      "action"),
                        ({"action": "deny", "path": "(("}, "path"),
                        ({"action": "deny", "cidr": "1.2.3.4", "bogus": 1}, "bogus"),
                        # a list file that is not there, or not a file: it was stored, and
                        # every replica logged "cannot be read" on every look
                        ({"action": "deny", "list": "missing.txt"}, "list"),
                        ({"action": "deny", "list": "."}, "list")]:
        r = await admin.post("/admin/v1/edge/rules", headers=s.admin, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, r.text
    assert (await admin.delete(f"/admin/v1/edge/rules/{rule_id}", headers=s.admin)).json() \
        == {"id": rule_id, "deleted": True}
    r = await admin.delete(f"/admin/v1/edge/rules/{rule_id}", headers=s.admin)
    assert r.status_code == 404
    for _ in range(100):
        if (await visitor.get("/v1/models")).status_code == 200:
            break
        await asyncio.sleep(0.02)
    assert (await visitor.get("/v1/models")).status_code == 200


async def test_admin_bans(site: Any) -> None:
    s = await site()
    admin, visitor = s.at("127.0.0.1"), s.at("2001:db8::5")
    r = await admin.post("/admin/v1/edge/bans", headers=s.admin,
                         json={"subject": "2001:db8::/64", "seconds": 600, "reason": "spam"})
    assert r.status_code == 201 and r.json()["subject"] == "2001:db8::/64"
    denied(await visitor.get("/v1/models"))
    r = await admin.post("/admin/v1/edge/bans", headers=s.admin, json={"subject": "nobody"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "subject"
    r = await admin.post("/admin/v1/edge/bans", headers=s.admin,
                         json={"subject": "192.0.2.1", "seconds": -1})
    assert r.status_code == 400
    assert (await admin.delete("/admin/v1/edge/bans/2001:db8::/64", headers=s.admin)
            ).status_code == 200
    assert (await visitor.get("/v1/models")).status_code == 200
    r = await admin.delete("/admin/v1/edge/bans/2001:db8::/64", headers=s.admin)
    assert r.status_code == 404
    r = await admin.delete("/admin/v1/edge/bans/bad", headers=s.admin)
    assert r.status_code == 400


async def test_listing_an_attack_s_bans_comes_in_pieces_and_reads_the_same(
        site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /admin/v1/edge/bans during an attack (thousands of bans): on memory:// no read of
    the state waits for anything, and 10,000 bans read, made into models and dumped at once
    held the worker's loop ~55 ms. They are read in turns, a page at a time, serialized a
    piece at a time — and read exactly as the documented Page of BanOut."""
    s = await site()
    maker = Bans(s.identity.state, s.identity.settings.edge.detector)
    for i in range(1_200):
        await maker.ban(f"198.{18 + (i >> 8)}.{i & 255}.7", f"spam é {i}", 600 + i)
    await maker.ban("203.0.113.0/24", "by hand", 60)
    admin = s.at("127.0.0.1")
    async with json_pieces_watched(monkeypatch) as seen:
        r = await admin.get("/admin/v1/edge/bans", headers=s.admin)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert len(seen) == 2 * -(-PAGE_BANS // PAGE_PIECE) + -(-201 // PAGE_PIECE)
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
    listed = await maker.list()
    assert r.json() == Page[BanOut](data=[BanOut.of(b) for b in listed]).model_dump(mode="json")
    data = r.json()["data"]
    assert len(data) == 1_201 and [b["subject"] for b in data] == sorted(b["subject"]
                                                                         for b in data)
    assert data[-1] == {"subject": "203.0.113.0/24", "reason": "by hand", "strikes": 0,
                        "at": data[-1]["at"], "until": data[-1]["at"] + 60}


async def test_the_bans_listing_with_the_state_failing_half_way_is_503_and_bans_still_hold(
        site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state layer (Redis) failing while the bans are read a page at a time: the admin
    API's 503, not a 500 nor a short list; the bans already known keep being enforced and
    other visitors keep being served."""
    s = await site()
    maker = Bans(s.identity.state, s.identity.settings.edge.detector)
    for i in range(PAGE_BANS + 20):
        await maker.ban(f"198.18.{i >> 8}.{i & 255}", "spam", 600)
    state, reads = s.identity.state, [0]
    get = state.get

    async def failing(key: str) -> Any:
        reads[0] += 1
        if reads[0] > PAGE_BANS + 5:  # after the first page was made
            raise StateError("connection lost")
        return await get(key)

    monkeypatch.setattr(state, "get", failing)
    admin = s.at("127.0.0.1")
    error_body = (await admin.get("/admin/v1/edge/bans", headers=s.admin))
    assert error_body.status_code == 503, error_body.text
    assert error_body.json()["error"]["code"] == "identity_unavailable"
    denied(await s.at("198.18.0.3").get("/v1/models"))
    assert (await s.at("203.0.113.9").get("/v1/models")).status_code == 200
    monkeypatch.setattr(state, "get", get)
    r = await admin.get("/admin/v1/edge/bans", headers=s.admin)
    assert r.status_code == 200 and len(r.json()["data"]) == PAGE_BANS + 20


async def test_a_challenge_rule_without_the_human_check_denies(tmp_path: Path) -> None:
    settings = EdgeSettings.model_validate({"rules": [
        {"action": "challenge", "path": "^/login", "name": "login-check"}]})
    state = open_state("memory://")
    bans = Bans(state, settings.detector)
    metrics = Metrics()
    book = RuleBook(settings, tmp_path, None)
    edge = Edge(settings, book, bans, Detector(settings.detector, bans, metrics),
                RayLog(EdgeRecords(None), size=100, keep_days=1),  # type: ignore[arg-type]
                metrics, challenger=None)
    v = edge.visitor("GET", "/login", {"accept": "text/html"}, "192.0.2.1")
    verdict = await edge.screen(v)
    assert verdict.error is not None and verdict.error.code == "1020"
    # a key on a web path changes nothing (issue 12): denied the same way
    keyed = edge.visitor("GET", "/login", {"authorization": "Bearer x"}, "192.0.2.1")
    assert (await edge.screen(keyed)).error is not None
    assert 'gatehouse_edge_blocks_total{reason="rule",rule="login-check"} 2.0' in \
        metrics.render().decode()


async def test_quota_network_scope_uses_the_resolved_address(site: Any) -> None:
    s = await site(edge={"trusted_proxies": ["10.0.0.0/8"]},
                   quota={"network_limits": {"requests_per_minute": 2}})
    proxy = s.at("10.0.0.1")
    one = {"x-forwarded-for": "198.51.100.1"}
    two = {"x-forwarded-for": "198.51.100.2"}
    for _ in range(2):
        r = await proxy.post("/v1/chat/completions", json=HELLO, headers=one)
        assert r.status_code == 200, r.text
    r = await proxy.post("/v1/chat/completions", json=HELLO, headers=one)
    assert r.status_code == 429 and "198.51.100.1/32" in r.json()["error"]["message"]
    # another client behind the same proxy has its own network counter
    assert (await proxy.post("/v1/chat/completions", json=HELLO, headers=two)).status_code \
        == 200


async def test_a_rule_added_on_one_replica_applies_on_another_over_redis(
        tmp_path: Path) -> None:
    from tests.support.services import REDIS_URL

    shared = {"storage": {"database_url": f"sqlite+aiosqlite:///{tmp_path}/shared.db",
                          "state_url": REDIS_URL},
              "edge": {"rules_reload_seconds": 3600}}  # only the broadcast can explain it
    apps = []
    for _ in range(2):
        identity = IdentityService(make_settings(tmp_path, **shared))
        app = create_app(identity.settings, identity=identity)
        await app.startup()
        apps.append((app, identity))
    key, _ = await apps[0][1].accounts.create_key(None, scope="admin")
    one = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0][0]), base_url="http://gw")
    who = f"198.51.100.{secrets.randbelow(250) + 1}"
    two = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1][0], client=(who, 1)),
                            base_url="http://gw")
    try:
        assert (await two.get("/v1/models")).status_code == 200
        r = await one.post("/admin/v1/edge/rules", headers={"authorization": f"Bearer {key}"},
                           json={"action": "deny", "cidr": who})
        assert r.status_code == 201
        for _ in range(150):
            if (await two.get("/v1/models")).status_code == 403:
                break
            await asyncio.sleep(0.02)
        denied(await two.get("/v1/models"))
        await one.delete(f"/admin/v1/edge/rules/{r.json()['id']}",
                         headers={"authorization": f"Bearer {key}"})
    finally:
        await one.aclose()
        await two.aclose()
        for app, _ in apps:
            await app.aclose()
