"""The web path's sign-in, session expiry and sign-out, driven in-process with a fake clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.config import Settings
from gatehouse.identity.passwords import hash_password
from gatehouse.identity.service import IdentityService
from gatehouse.server import Gateway
from gatehouse.state.base import StateError
from tests.unit.conftest import make_settings

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
COOKIE = "gatehouse_session"
BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
EXPIRED = "Your session has expired — sign in again."
WRONG = "Email or password is wrong."
IDLE, ABSOLUTE = 30 * 60, 2 * 3600


@dataclass
class Site:
    app: Gateway
    identity: IdentityService
    now: list[float]
    clients: list[httpx.AsyncClient]

    def client(self, base_url: str = "http://gw", **headers: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app,
                                                            client=("10.0.0.1", 1234)),
                              base_url=base_url, headers={**BROWSER, **headers})
        self.clients.append(c)
        return c

    def tick(self, seconds: float) -> None:
        self.now[0] += seconds


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    sites: list[Site] = []

    async def make(**identity: Any) -> Site:
        folder = tmp_path / f"site{len(sites)}"
        folder.mkdir()
        settings = make_settings(folder, identity={"session_idle_minutes": IDLE / 60,
                                                   "session_absolute_hours": ABSOLUTE / 3600,
                                                   **identity})
        site = Site(*await open_site(settings, EMAIL), [])
        sites.append(site)
        return site

    yield make
    await close_sites(sites)


async def open_site(settings: Settings, email: str, start: float = 1_700_000_000.0
                    ) -> tuple[Gateway, IdentityService, list[float]]:
    """A started gateway on a fake clock (``now[0]``), with one user (``PASSWORD``)."""
    now = [start]
    ids = IdentityService(settings, clock=lambda: now[0])
    app = create_app(settings, clock=lambda: now[0], identity=ids)
    await app.startup()
    await ids.accounts.create_user(email, hash_password(PASSWORD), None, "free")
    return app, ids, now


async def close_sites(sites: Sequence[Site | Any]) -> None:
    for site in sites:
        for c in site.clients:
            await c.aclose()
        await site.app.aclose()


@pytest.fixture
async def site(make_site: SiteFactory) -> Site:
    return await make_site()


def csrf_field(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    return {h.partition("=")[0]: h for h in response.headers.get_list("set-cookie")}


async def sign_in(client: httpx.AsyncClient, email: str = EMAIL, password: str = PASSWORD,
                  next_path: str | None = None) -> httpx.Response:
    form = await client.get("/login", params={"next": next_path} if next_path else None)
    assert form.status_code == 200
    data = {"csrf": csrf_field(form.text), "email": email, "password": password,
            "next": csrf_next(form.text)}
    return await client.post("/login", data=data)


def csrf_next(html: str) -> str:
    match = re.search(r'name="next" value="([^"]*)"', html)
    assert match
    return match.group(1)


def jar(session_id: str) -> dict[str, str]:
    """An explicit Cookie header (it wins over the client's jar)."""
    return {"cookie": f"{COOKIE}={session_id}"}


def session_of(client: httpx.AsyncClient) -> str:
    value = client.cookies.get(COOKIE)
    assert value
    return value


async def test_sign_in_and_account_page(site: Site) -> None:
    c = site.client()
    first = await c.get("/account")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/account"
    response = await sign_in(c)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    page = await c.get("/account")
    assert page.status_code == 200
    assert EMAIL in page.text and ">free<" in page.text and "resets" in page.text
    rid = page.headers["x-request-id"]
    assert re.match(r"^req_[0-9a-z]{26}$", rid)
    assert f'<footer>Request ID <code id="request-id">{rid}</code>' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    # one sign-out form (a box to tick for every device), with the session's token
    session = await site.identity.sessions.load(session_of(c))
    assert session is not None
    assert page.text.count(f'name="csrf" value="{session.csrf}"') == 1
    assert 'name="everywhere" value="1"' in page.text


async def test_idle_expiry_on_page_and_api(site: Site) -> None:
    c = site.client()
    await sign_in(c)
    sid = session_of(c)
    # activity resets the idle timer: 40 minutes in, but never 30 idle
    site.tick(20 * 60)
    assert (await c.get("/account")).status_code == 200
    site.tick(20 * 60)
    assert (await c.get("/account")).status_code == 200
    site.tick(IDLE + 1)
    gone = await c.get("/account")
    assert gone.status_code == 303
    assert gone.headers["location"] == "/login?reason=session_expired&next=/account"
    cleared = set_cookies(gone)[COOKIE]
    assert cleared.startswith(f"{COOKIE}=;") and "Max-Age=0" in cleared
    login = await c.get(gone.headers["location"])
    assert EXPIRED in login.text and csrf_next(login.text) == "/account"
    api = await c.get("/v1/models", headers={**jar(sid), "accept": "*/*"})
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "session_expired"
    assert api.json()["error"]["message"] == EXPIRED


async def test_idle_expiry_seen_first_by_the_api(site: Site) -> None:
    c = site.client()
    await sign_in(c)
    sid = session_of(c)
    site.tick(IDLE + 1)
    api = await c.get("/v1/models", headers={"accept": "application/json"})
    assert api.status_code == 401 and api.json()["error"]["code"] == "session_expired"
    page = await c.get("/account", headers=jar(sid))
    assert page.headers["location"] == "/login?reason=session_expired&next=/account"


async def test_absolute_expiry_despite_activity(site: Site) -> None:
    c = site.client()
    await sign_in(c)
    for _ in range(ABSOLUTE // (20 * 60) - 1):
        site.tick(20 * 60)
        assert (await c.get("/account")).status_code == 200
    site.tick(20 * 60)  # exactly the absolute lifetime after sign-in
    gone = await c.get("/account")
    assert gone.status_code == 303 and "reason=session_expired" in gone.headers["location"]


async def test_no_fixation(site: Site) -> None:
    c = site.client()
    planted = "planted-by-an-attacker-0123456789abcdefghijklmnop"
    c.cookies.set(COOKIE, planted, domain="gw.local", path="/")  # as the jar files "gw"
    await sign_in(c)
    first = session_of(c)
    assert first != planted
    assert await site.identity.sessions.load(planted) is None
    # signing in again over a live session replaces it; the old id is dead
    await sign_in(c)
    second = session_of(c)
    assert second != first
    assert await site.identity.sessions.load(first) is None
    assert await site.identity.sessions.load(second) is not None
    stale = await c.get("/account", headers=jar(first))
    assert stale.status_code == 303 and "session_expired" in stale.headers["location"]


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_login_csrf(site: Site, token: str | None) -> None:
    c = site.client()
    await c.get("/login")
    data = {"email": EMAIL, "password": PASSWORD, **({"csrf": token} if token else {})}
    refused = await c.post("/login", data=data)
    assert refused.status_code == 403
    assert "csrf_failed" in refused.text and "Open the sign-in page again" in refused.text
    assert refused.headers["x-request-id"] in refused.text
    assert COOKIE not in set_cookies(refused)
    as_json = await c.post("/login", data=data, headers={"accept": "application/json"})
    assert as_json.status_code == 403 and as_json.json()["error"]["code"] == "csrf_failed"
    assert as_json.json()["request_id"] == as_json.headers["x-request-id"]


async def test_login_csrf_needs_the_cookie(site: Site) -> None:
    c = site.client()
    token = csrf_field((await c.get("/login")).text)
    c.cookies.clear()
    refused = await c.post("/login", data={"csrf": token, "email": EMAIL, "password": PASSWORD})
    assert refused.status_code == 403


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_logout_csrf(site: Site, token: str | None) -> None:
    c = site.client()
    await sign_in(c)
    refused = await c.post("/logout", data={"csrf": token} if token else {})
    assert refused.status_code == 403 and "csrf_failed" in refused.text
    assert (await c.get("/account")).status_code == 200  # still signed in


async def test_logout_ends_the_session(site: Site) -> None:
    c = site.client()
    await sign_in(c)
    sid = session_of(c)
    page = await c.get("/account")
    out = await c.post("/logout", data={"csrf": csrf_field(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login?reason=signed_out"
    assert "Max-Age=0" in set_cookies(out)[COOKIE]
    assert "You have signed out." in (await c.get(out.headers["location"])).text
    assert await site.identity.sessions.load(sid) is None
    again = await c.get("/account", headers=jar(sid))
    assert "reason=session_expired" in again.headers["location"]


async def test_logout_everywhere(site: Site) -> None:
    await site.identity.accounts.create_user("bob@example.com", hash_password(PASSWORD), None,
                                             "free")
    laptop, phone, bob = site.client(), site.client(), site.client()
    for c in (laptop, phone):
        await sign_in(c)
    await sign_in(bob, "bob@example.com")
    phone_sid = session_of(phone)
    page = await laptop.get("/account")
    out = await laptop.post("/logout", data={"csrf": csrf_field(page.text), "everywhere": "1"})
    assert out.headers["location"] == "/login?reason=signed_out_everywhere"
    assert "You have signed out on every device." in (await laptop.get(out.headers["location"])).text
    assert await site.identity.sessions.load(phone_sid) is None
    assert (await phone.get("/account")).status_code == 303
    assert (await bob.get("/account")).status_code == 200  # another user is untouched


async def test_logout_without_a_session(site: Site) -> None:
    c = site.client()
    nothing = await c.post("/logout", data={})
    assert nothing.status_code == 303 and nothing.headers["location"] == "/login"
    dead = await c.post("/logout", data={}, headers=jar("no-such-session"))
    assert dead.headers["location"] == "/login?reason=session_expired"
    browsed = await c.get("/logout")
    assert browsed.status_code == 303 and browsed.headers["location"] == "/account"


@pytest.mark.parametrize("base_url, setting, secure", [
    ("http://gw", "auto", False), ("https://gw", "auto", True),
    ("http://gw", True, True), ("https://gw", False, False)])
async def test_cookie_attributes(make_site: SiteFactory, base_url: str, setting: bool | str,
                                 secure: bool) -> None:
    site = await make_site(cookie_secure=setting)
    c = site.client(base_url)
    form = await c.get("/login")
    pre = set_cookies(form)["gatehouse_login_csrf"]
    assert "; Path=/login; HttpOnly; SameSite=Lax" in pre and ("; Secure" in pre) is secure
    assert "Max-Age" not in pre
    token = csrf_field(form.text)
    # explicit, since the jar keeps Secure cookies from plain http
    done = await c.post("/login", data={"csrf": token, "email": EMAIL, "password": PASSWORD},
                        headers={"cookie": f"gatehouse_login_csrf={token}"})
    assert done.status_code == 303
    cookie = set_cookies(done)[COOKIE]
    attributes = cookie.split("; ")[1:]
    assert attributes == [f"Max-Age={ABSOLUTE}", "Path=/", "HttpOnly", "SameSite=Lax",
                          *(["Secure"] if secure else [])]
    assert "Max-Age=0" in set_cookies(done)["gatehouse_login_csrf"]


@pytest.mark.parametrize("target", ["//evil.example", "//evil.example/account",
                                    "https://evil.example/", "/\\evil.example",
                                    "evil.example", "/\r\nSet-Cookie:x=1"])
async def test_open_redirect_refused(site: Site, target: str) -> None:
    c = site.client()
    form = await c.get("/login", params={"next": target})
    assert "evil" not in form.text
    done = await c.post("/login", data={"csrf": csrf_field(form.text), "email": EMAIL,
                                        "password": PASSWORD, "next": target})
    assert done.status_code == 303 and done.headers["location"] == "/account"


async def test_local_next_is_kept(site: Site) -> None:
    done = await sign_in(site.client(), next_path="/account?tab=usage")
    assert done.headers["location"] == "/account?tab=usage"


@pytest.mark.parametrize("path, encoded", [
    ("/c/%E2%82%AC", "/c/%25E2%2582%25AC"),  # not Latin-1: a header cannot hold it decoded
    ("/c/%C3%A9", "/c/%25C3%25A9"),  # Latin-1, but not ASCII
    ("/c/100%25", "/c/100%2525")])  # a "%" of its own
async def test_a_signed_out_page_with_an_encoded_path_comes_back_to_it(
        site: Site, path: str, encoded: str) -> None:
    c = site.client()
    out = await c.get(path)
    assert out.status_code == 303 and out.headers["location"] == f"/login?next={encoded}"
    stale = await c.get(path, headers=jar("no-such-session"))
    assert stale.status_code == 303
    assert stale.headers["location"] == f"/login?reason=session_expired&next={encoded}"
    form = await c.get(out.headers["location"])
    assert csrf_next(form.text) == path
    done = await c.post("/login", data={"csrf": csrf_field(form.text), "email": EMAIL,
                                        "password": PASSWORD, "next": csrf_next(form.text)})
    assert done.status_code == 303 and done.headers["location"] == path


async def test_a_next_typed_undecoded_is_encoded_for_the_header(site: Site) -> None:
    done = await sign_in(site.client(), next_path="/c/€")
    assert done.headers["location"] == "/c/%E2%82%AC"


async def test_wrong_password_and_unknown_user_look_the_same(site: Site) -> None:
    await site.identity.accounts.create_user("off@example.com", hash_password(PASSWORD), None,
                                             "free")
    await site.identity.accounts.update_user("off@example.com", disabled=True)
    c = site.client()
    pages = []
    for email, password in [(EMAIL, "not the password"), ("nobody@example.com", PASSWORD),
                            ("off@example.com", PASSWORD)]:
        answer = await sign_in(c, email, password)
        assert answer.status_code == 401 and WRONG in answer.text
        assert COOKIE not in set_cookies(answer)
        pages.append(answer.text.replace(answer.headers["x-request-id"], "")
                     .replace(email, "EMAIL"))
    assert pages[0] == pages[1] == pages[2]
    token = csrf_field((await c.get("/login")).text)
    bodies = []
    for email, password in [(EMAIL, "not the password"), ("nobody@example.com", PASSWORD)]:
        answer = await c.post("/login", data={"csrf": token, "email": email,
                                              "password": password},
                              headers={"accept": "application/json"})
        assert answer.status_code == 401
        bodies.append(answer.json()["error"])
    assert bodies[0] == bodies[1] and bodies[0]["code"] == "invalid_credentials"


@pytest.mark.parametrize("reason, shown", [
    ("session_expired", EXPIRED), ("signed_out", "You have signed out."),
    ("signed_out_everywhere", "You have signed out on every device."),
    ("<script>alert(1)</script>", None)])
async def test_reason_messages(site: Site, reason: str, shown: str | None) -> None:
    page = await site.client().get("/login", params={"reason": reason})
    assert page.status_code == 200
    if shown is None:
        assert "alert" not in page.text and 'id="notice"' not in page.text
    else:
        assert f'id="notice" role="status">{shown}</p>' in page.text


async def test_cookie_api_calls_need_the_csrf_header(site: Site) -> None:
    c = site.client(accept="application/json")
    await sign_in(c)
    session = await site.identity.sessions.load(session_of(c))
    assert session is not None
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    refused = await c.post("/v1/chat/completions", json=body)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = await c.post("/v1/chat/completions", json=body, headers={"x-csrf-token": "nope"})
    assert wrong.status_code == 403
    ok = await c.post("/v1/chat/completions", json=body, headers={"x-csrf-token": session.csrf})
    assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"


@pytest.mark.parametrize("other", ["x=a b", 'x="a', "x=a\\b", "x=\"a\\\"b\"; y=c d"])
async def test_another_cookie_out_of_the_rfc_does_not_lose_the_session(
        make_site: SiteFactory, other: str) -> None:
    # sites set such cookies (analytics, other apps on the host); browsers send them as set
    site = await make_site(require_key=True)
    c = site.client(accept="application/json")
    await sign_in(c)
    session = await site.identity.sessions.load(session_of(c))
    assert session is not None
    for header in (f"{other}; {COOKIE}={session_of(c)}", f"{COOKIE}={session_of(c)}; {other}"):
        cookie = {"cookie": header}
        assert (await c.get("/chat/conversations", headers=cookie)).status_code == 200
        models = await c.get("/v1/models", headers=cookie)
        assert models.status_code == 200, models.text
        sent = await c.post("/chat/send", headers={**cookie, "x-csrf-token": session.csrf},
                            json={"model": "demo", "content": "hi"})
        assert sent.status_code == 200, sent.text


async def test_sending_in_the_chat_with_no_session_says_sign_in_not_api_key(
        make_site: SiteFactory) -> None:
    site = await make_site(require_key=True)
    c = site.client(accept="application/json")
    sent = await c.post("/chat/send", json={"model": "demo", "content": "hi"})
    assert sent.status_code == 401, sent.text
    body = sent.json()
    assert body["error"]["code"] == "session_expired"
    assert body["error"]["message"] == "You are not signed in: sign in to chat."
    assert body["view"]["action"] == "sign_in" and body["request_id"] == sent.headers[
        "x-request-id"]
    # a program without any credential is still told about keys (docs/errors.md)
    for api in (await c.get("/v1/models"),
                await c.post("/v1/chat/completions", json={"model": "demo", "messages": [
                    {"role": "user", "content": "hi"}]})):
        assert api.status_code == 401 and api.json()["error"]["code"] == "missing_api_key"


async def test_unknown_page_and_method_carry_the_request_id(site: Site) -> None:
    c = site.client()
    missing = await c.get("/accountx")
    assert missing.status_code == 404 and "unknown_url" in missing.text
    assert missing.headers["x-request-id"] in missing.text
    assert missing.headers["x-frame-options"] == "DENY"
    wrong = await c.put("/login")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
    assert wrong.headers["x-request-id"] in wrong.text


async def test_oversized_form_is_refused(site: Site) -> None:
    c = site.client()
    token = csrf_field((await c.get("/login")).text)
    big = await c.post("/login", data={"csrf": token, "email": "x" * 20_000, "password": "y"})
    assert big.status_code == 413


async def test_state_down_is_a_503_page(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    c = site.client()
    await sign_in(c)

    async def down(session_id: str) -> None:
        raise StateError("connection refused")

    monkeypatch.setattr(site.identity.sessions, "load", down)
    page = await c.get("/account")
    assert page.status_code == 503 and "identity_unavailable" in page.text
    assert page.headers["retry-after"] == "5"
    assert page.headers["x-request-id"] in page.text
