"""The human check, in-process: the page, verifying a solution, the clearance cookie, the
cookie check, and every way of getting it wrong.

A tiny app stands in for the edge's decision (challenge everything but the check's own
routes); the challenge, its checkpoint, the state layer and the metrics are the real ones.
Whole-app tests (rules, API clients, feeds) are in test_edge_challenge_app.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import ipaddress
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gatehouse.context import prefers_html
from gatehouse.edge.challenge import PREFIX, VERIFY_PATH, Challenge, next_of
from gatehouse.edge.checkpoint import Checkpoint, build_challenge_app
from gatehouse.edge.clearance import COOKIE
from gatehouse.edge.proof import leading_zero_bits, solves
from gatehouse.edge.signing import binding
from gatehouse.edge.visitor import OffenseKind, Visitor
from gatehouse.identity.keys import KeyMaterial
from gatehouse.state import State, open_state
from gatehouse.telemetry.metrics import Metrics

SECRET = b"challenge-test-secret-0123456789abcdef"
BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           "user-agent": "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0",
           "sec-fetch-mode": "navigate"}
DIFFICULTY = 8
START = 1_700_000_000.0


def visitor_of(scope: dict[str, Any]) -> Visitor:
    request = Request(scope)
    assert request.client is not None
    ip = ipaddress.ip_address(request.client.host)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return Visitor(ip, str(ipaddress.ip_network((ip, 24), strict=False)), request.method,
                   scope["path"], headers, False, prefers_html(headers.get("accept", "")),
                   scope.get("query_string", b"").decode("latin-1"))


@dataclass
class Site:
    """A protected page behind the real challenge; records the offences it is told of."""

    state: State
    now: list[float] = field(default_factory=lambda: [START])
    metrics: Metrics = field(default_factory=Metrics)
    offenses: list[tuple[str, OffenseKind]] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.challenge = Challenge(KeyMaterial(SECRET).derive, self.state, self.metrics,
                                   challenge_ttl=300, clearance_ttl=1800, offenses=self,
                                   clock=lambda: self.now[0])
        self.routes = build_challenge_app(Checkpoint(self.challenge, visitor_of,
                                                     ray_id=lambda: "ray-checkpoint"))

    def offense(self, visitor: Visitor, kind: OffenseKind) -> None:
        self.offenses.append((str(visitor.ip), kind))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"].startswith(PREFIX):
            return await self.routes(scope, receive, send)
        visitor = visitor_of(scope)
        response: Response
        if self.challenge.cleared(visitor):
            response = PlainTextResponse("the protected page")
        else:
            reply = await self.challenge.challenge(visitor, DIFFICULTY, "ray-page", rule="web")
            response = Response(reply.body, reply.status, reply.headers)
        await response(scope, receive, send)

    def client(self, ip: str = "198.51.100.7", base_url: str = "http://gw",
               **headers: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self, client=(ip, 4000)),
                              base_url=base_url, headers={**BROWSER, **headers})
        self.clients.append(c)
        return c

    def count(self, result: str, reason: str = "", rule: str = "web") -> float:
        value = self.metrics.registry.get_sample_value(
            "gatehouse_edge_challenges_total", {"rule": rule, "result": result, "reason": reason})
        return value or 0.0


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site(open_state("memory://"))
    yield s
    for c in s.clients:
        await c.aclose()


@dataclass
class Page:
    token: str
    difficulty: int
    next: str
    text: str


def read_page(response: httpx.Response) -> Page:
    assert response.status_code == 403
    assert response.headers["gatehouse-mitigated"] == "challenge"
    text = response.text

    def field_value(name: str) -> str:
        found = re.search(rf'name="{name}" value="([^"]*)"', text)
        assert found, name
        return html.unescape(found.group(1))

    difficulty = re.search(r'data-difficulty="(\d+)"', text)
    assert difficulty
    return Page(field_value("token"), int(difficulty.group(1)), field_value("next"), text)


def solve(token: str, difficulty: int) -> str:
    for counter in itertools.count():
        if solves(token, str(counter), difficulty):
            return str(counter)
    raise AssertionError("unreachable")


async def answer(client: httpx.AsyncClient, page: Page, counter: str | None = None,
                 **extra: str) -> httpx.Response:
    form = {"token": page.token, "counter": counter or solve(page.token, page.difficulty),
            "next": page.next, **extra}
    return await client.post(VERIFY_PATH, data=form)


def clearance_of(response: httpx.Response) -> str:
    header = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith(COOKIE + "="))
    return header


async def pass_check(client: httpx.AsyncClient, path: str = "/login") -> httpx.Response:
    page = read_page(await client.get(path))
    verified = await answer(client, page)
    assert verified.status_code == 303, verified.text
    return await client.get(verified.headers["location"])


async def test_proof_of_work_counts_leading_zero_bits() -> None:
    assert leading_zero_bits(b"\x00\x00\xff") == 16
    assert leading_zero_bits(b"\x00\x01") == 15 and leading_zero_bits(b"\x80") == 0
    assert leading_zero_bits(b"\x00\x00") == 16
    token = "abc"
    counter = solve(token, 12)
    assert leading_zero_bits(hashlib.sha256(f"{token}{counter}".encode()).digest()) >= 12
    for bad in ("", "-1", "1e3", " 1", "１", "9" * 17):
        assert not solves(token, bad, 0)


async def test_a_browser_passes_once_and_keeps_its_clearance(site: Site) -> None:
    c = site.client()
    first = await c.get("/login?next=/account")
    page = read_page(first)
    assert page.difficulty == DIFFICULTY and page.next == "/login?next=/account"
    assert first.headers["gatehouse-ray"] == "ray-page"
    assert "Checking your browser before accessing gw" in page.text
    assert 'id="ray-id">ray-page<' in page.text
    # the inline solver is the one script the page's policy lets run
    script = re.search(r"<script>(.*)</script>", page.text, re.DOTALL)
    assert script
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in first.headers["content-security-policy"]
    assert first.headers["cache-control"] == "no-store"

    verified = await answer(c, page)
    assert verified.status_code == 303
    assert verified.headers["location"].startswith("/_gatehouse/challenge/check?t=")
    cookie = clearance_of(verified)
    assert "; Path=/;" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Max-Age=1800" in cookie and "Secure" not in cookie

    checked = await c.get(verified.headers["location"])
    assert checked.status_code == 303 and checked.headers["location"] == "/login?next=/account"
    assert (await c.get("/login")).text == "the protected page"
    site.now[0] += 1700  # still within the clearance
    assert (await c.get("/account")).text == "the protected page"
    assert site.count("issued", "page") == 1 and site.count("solved") == 1
    assert site.offenses == []


async def test_over_https_the_cookie_is_secure(site: Site) -> None:
    c = site.client(base_url="https://gw")
    verified = await answer(c, read_page(await c.get("/login")))
    assert "; Secure" in clearance_of(verified)


async def test_expiry_reruns_the_check(site: Site) -> None:
    c = site.client()
    assert (await pass_check(c)).status_code == 303
    site.now[0] += 1801
    read_page(await c.get("/login"))  # challenged again, not scolded
    assert site.offenses == []
    assert (await pass_check(c)).headers["location"] == "/login"
    assert (await c.get("/login")).status_code == 200


async def test_forged_and_moved_cookies_are_refused(site: Site) -> None:
    c = site.client()
    await pass_check(c)
    value = c.cookies[COOKIE]
    version, expires, bound, mac = value.split(".")

    for forged in (f"{version}.{int(expires) + 10**6}.{bound}.{mac}",  # a longer life
                   f"{version}.{expires}.{bound}.{mac[:-2]}AA",        # another signature
                   "1.9999999999.x.y", "garbage", ""):
        other = site.client()
        other.cookies.set(COOKIE, forged)
        read_page(await other.get("/login"))
    # made-up cookies count against the sender; an empty one is just no cookie
    assert len(site.offenses) == 4 and site.count("failed", "forged_cookie") == 4

    # the real cookie, taken to another browser or another network, is refused too
    other_browser = site.client(**{"user-agent": "curl/8.0"})
    other_browser.cookies.set(COOKIE, value)
    read_page(await other_browser.get("/login"))
    other_network = site.client(ip="203.0.113.9")
    other_network.cookies.set(COOKIE, value)
    read_page(await other_network.get("/login"))
    # … but not on the same network (a /24 here) with the same browser
    same_network = site.client(ip="198.51.100.200")
    same_network.cookies.set(COOKIE, value)
    assert (await same_network.get("/login")).status_code == 200
    # a cookie from a server with another secret is a forgery
    foreign = Challenge(KeyMaterial(b"another-server-secret-0123456789abcdef").derive,
                        site.state, Metrics())
    stranger = site.client()
    stranger.cookies.set(COOKIE, foreign.clearances.mint(
        binding("198.51.100.0/24", BROWSER["user-agent"])))
    read_page(await stranger.get("/login"))
    assert len(site.offenses) == 5


async def test_a_nonce_is_used_once(site: Site) -> None:
    c = site.client()
    page = read_page(await c.get("/login"))
    counter = solve(page.token, page.difficulty)
    assert (await answer(c, page, counter)).status_code == 303
    again = await answer(site.client(), page, counter)
    assert again.status_code == 403
    assert "already used" in again.text and 'id="ray-id">ray-checkpoint<' in again.text
    assert again.headers["gatehouse-mitigated"] == "challenge"
    assert COOKIE not in again.headers.get("set-cookie", "")
    assert site.offenses == [("198.51.100.7", "challenge_failed")]
    assert site.count("failed", "replayed") == 1

    # sent many times at once, a solution still clears exactly once
    page = read_page(await site.client().get("/login"))
    counter = solve(page.token, page.difficulty)
    answers = await asyncio.gather(*(answer(site.client(), page, counter) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [303] + [403] * 9


async def test_wrong_forged_and_moved_solutions_are_refused(site: Site) -> None:
    c = site.client()
    page = read_page(await c.get("/login"))
    right = int(solve(page.token, page.difficulty))
    wrong = next(str(n) for n in itertools.count(right + 1)
                 if not solves(page.token, str(n), page.difficulty))
    refused = await answer(c, page, wrong)
    assert refused.status_code == 403 and "was not right" in refused.text

    # an easier puzzle made up from ours: the signature no longer fits
    body, mac = page.token.split(".")
    fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    fields[2] = 0
    easier = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()
    refused = await answer(c, Page(f"{easier}.{mac}", 0, "/login", ""), "0")
    assert refused.status_code == 403 and "not for a check this site gave out" in refused.text
    for token in ("", "x", "a.b.c", "." * 3000):
        assert (await answer(c, Page(token, 0, "/", ""), "1")).status_code == 403

    # solved by one client, handed in by another network
    moved = await answer(site.client(ip="192.0.2.1"), page)
    assert moved.status_code == 403 and "another network" in moved.text
    assert site.count("failed", "wrong_answer") == 1 and site.count("failed", "rebound") == 1
    assert len(site.offenses) == 7
    # the puzzle was not used up by the failures: the right answer still works
    assert (await answer(c, page)).status_code == 303


async def test_an_expired_puzzle_starts_over(site: Site) -> None:
    c = site.client()
    page = read_page(await c.get("/login"))
    site.now[0] += 301
    late = await answer(c, page)
    assert late.status_code == 303 and late.headers["location"] == "/login"
    assert COOKIE not in late.headers.get("set-cookie", "") and site.offenses == []
    assert site.count("failed", "expired") == 1


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example/x", "/\\evil.example", "evil.example",
    "/ok\r\nset-cookie: a=b", "", "/" + "a" * 600,
])
async def test_next_never_leaves_the_site(site: Site, target: str) -> None:
    c = site.client()
    page = read_page(await c.get("/login"))
    verified = await answer(c, Page(page.token, page.difficulty, target, ""))
    checked = await c.get(verified.headers["location"])
    assert checked.status_code == 303 and checked.headers["location"] == "/"


async def test_the_way_back_is_the_path_asked_for(site: Site) -> None:
    c = site.client()
    assert read_page(await c.get("/caf%C3%A9 menu/a%2Fb")).next == "/caf%C3%A9%20menu/a/b"
    assert read_page(await c.get("/" + "é" * 200)).next == "/"
    # what a test client cannot send, but a raw request line can
    for odd in ("//evil.example/x", "/\\evil.example", "evil", ""):
        visitor = visitor_of({"type": "http", "method": "GET", "path": odd, "headers": [],
                              "client": ("198.51.100.7", 1), "query_string": b""})
        assert next_of(visitor) == "/"
    page = read_page(await c.get("/caf%C3%A9 menu"))
    checked = await c.get((await answer(c, page)).headers["location"])
    assert checked.headers["location"] == "/caf%C3%A9%20menu"


async def test_the_way_back_keeps_the_query_string(site: Site) -> None:
    c = site.client()
    page = read_page(await c.get("/login?next=/account&lang=fr"))
    assert page.next == "/login?next=/account&lang=fr"
    checked = await c.get((await answer(c, page)).headers["location"])
    assert checked.headers["location"] == "/login?next=/account&lang=fr"
    assert (await c.get(checked.headers["location"])).text == "the protected page"


async def test_a_tampered_or_stale_cookie_check_goes_on_without_a_page(site: Site) -> None:
    c = site.client()
    page = read_page(await c.get("/login"))
    verified = await answer(c, page)
    mark = parse_qs(urlsplit(verified.headers["location"]).query)["t"][0]
    expires, rule, target, mac = mark.split(".")
    for forged in (f"{expires}.{rule}.//evil.example.{mac}",
                   f"{int(expires) + 999}.{rule}.{target}.{mac}",
                   "", "x" * 5000):
        checked = await c.get("/_gatehouse/challenge/check", params={"t": forged})
        assert checked.status_code == 303 and checked.headers["location"] == "/"
    site.now[0] += 61
    stale = await site.client().get(verified.headers["location"])
    assert stale.status_code == 303 and stale.headers["location"] == "/login"


async def test_blocked_cookies_get_a_page_not_a_loop(site: Site) -> None:
    c = site.client()
    page = read_page(await c.get("/login"))
    verified = await answer(c, page)
    c.cookies.clear()  # the browser refused the cookie
    checked = await c.get(verified.headers["location"])
    assert checked.status_code == 403
    assert checked.headers["gatehouse-mitigated"] == "challenge"
    assert "Cookies are blocked for this site" in checked.text
    assert "cookies_required" in checked.text and 'href="/login"' in checked.text
    assert site.count("failed", "cookies_blocked") == 1
    assert site.offenses == []


async def test_several_tabs_solving_at_once_all_get_through(site: Site) -> None:
    c = site.client()
    pages = [read_page(await c.get(f"/tab{i}")) for i in range(6)]
    assert len({p.token for p in pages}) == 6  # independent puzzles
    # all handed in at once, in one browser: each gets its own cookie, the last one set wins
    # the jar, and every tab's cookie check still finds a valid clearance
    verified = await asyncio.gather(*(answer(c, p) for p in pages))
    assert all(v.status_code == 303 for v in verified)
    cookies = [clearance_of(v).split(";")[0].split("=", 1)[1] for v in verified]
    checks = await asyncio.gather(*(c.get(v.headers["location"]) for v in verified))
    assert [r.headers["location"] for r in checks] == [f"/tab{i}" for i in range(6)]
    # a newer cookie never invalidates an older one
    for value in cookies:
        tab = site.client()
        tab.cookies.set(COOKIE, value)
        assert (await tab.get("/login")).status_code == 200
    assert site.count("solved") == 6 and site.offenses == []


@pytest.mark.parametrize("headers", [
    {"accept": "application/json"},
    {"accept": "*/*"},
    {"sec-fetch-mode": "cors"},
    {"x-requested-with": "XMLHttpRequest"},
])
async def test_scripts_get_json_they_can_recognise(site: Site, headers: dict[str, str]) -> None:
    c = site.client(**headers)
    r = await c.get("/login")
    assert r.status_code == 403 and r.headers["content-type"] == "application/json"
    assert r.headers["gatehouse-mitigated"] == "challenge"
    assert r.headers["gatehouse-ray"] == "ray-page"
    body = r.json()
    assert body["error"]["type"] == "access_denied"
    assert body["error"]["code"] == "challenge_required" and body["ray_id"] == "ray-page"
    assert site.count("issued", "json") == 1 and site.count("issued", "page") == 0


async def test_the_page_explains_itself_without_javascript(site: Site) -> None:
    text = read_page(await site.client().get("/login")).text
    noscript = re.search(r"<noscript>(.*)</noscript>", text, re.DOTALL)
    assert noscript
    words = " ".join(noscript.group(1).split())
    assert "JavaScript is needed for this check" in words
    assert "proof of work" in words and "30 minutes" in words
    assert "contact support and quote the Ray ID <code>ray-page</code>" in words
    assert "API key" in words


@pytest.mark.parametrize("method,path,body,status", [
    ("GET", VERIFY_PATH, None, 405),
    ("POST", VERIFY_PATH, b"token=x&counter=1", 403),           # not a form content type
    ("POST", VERIFY_PATH, b"%%%&&&", 403),
    ("POST", VERIFY_PATH, b"t=" + b"x" * 20000, 413),
    ("POST", "/_gatehouse/challenge/check", b"", 405),
    ("GET", "/_gatehouse/challenge/nothing", None, 404),
])
async def test_bad_requests_are_4xx(site: Site, method: str, path: str, body: bytes | None,
                                    status: int) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"} if body else {}
    if body == b"token=x&counter=1":
        headers = {"content-type": "text/plain"}
    r = await site.client().request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text


async def test_with_the_state_layer_down_a_solved_check_still_clears() -> None:
    s = Site(open_state("redis://127.0.0.1:1/0"))
    try:
        c = s.client()
        checked = await pass_check(c)
        assert checked.status_code == 303 and checked.headers["location"] == "/login"
    finally:
        for client in s.clients:
            await client.aclose()
        await s.state.aclose()
