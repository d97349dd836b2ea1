"""Self sign-up (``[web] signup``) over HTTP through the whole gateway, in process: off it is
the gateway's 404 and no link; on, a new account lands signed in on the configured tier and
org; CSRF; the admin API's password rules; the sign-in throttle (counted before any hash, one
counter with sign-in); and a taken email answered like a new one, with one argon2 operation
either way."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from gatehouse.config import ConfigError, load_settings
from gatehouse.identity import passwords
from gatehouse.identity.service import IdentityService
from gatehouse.server import Gateway
from tests.support.services import REDIS_URL
from tests.unit.conftest import make_settings
from tests.unit.test_web_sessions import BROWSER, PASSWORD, csrf_field, open_site

THROTTLE = {"account_free_failures": 3, "address_free_failures": 6,
            "first_lock_seconds": 5, "max_lock_seconds": 40}
GOOD = "a brand new password"


class Counting(PasswordHasher):
    """argon2 with cheap parameters that counts its operations."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=256, parallelism=1)
        self.ops = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.ops += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.ops += 1
        return super().verify(hash, password)


class Site:
    def __init__(self, app: Gateway, identity: IdentityService, email: str,
                 hasher: Counting) -> None:
        self.app, self.identity, self.email, self.hasher = app, identity, email, hasher
        self.clients: list[httpx.AsyncClient] = []
        self.ip = random_ip()  # Redis outlives a run: an address of its own

    def client(self, ip: str | None = None, **headers: str) -> httpx.AsyncClient:
        ip = ip or self.ip
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(ip, 1234)),
                              base_url="http://gw", headers={**BROWSER, **headers})
        self.clients.append(c)
        return c


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture(params=["memory", "redis"])
async def make_site(request: pytest.FixtureRequest, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SiteFactory]:
    hasher = Counting()
    monkeypatch.setattr(passwords, "_hasher", lambda: hasher)
    monkeypatch.setattr(passwords, "_DUMMY", hasher.hash("gatehouse: no such user"))
    sites: list[Site] = []
    state_url = "memory://" if request.param == "memory" else REDIS_URL

    async def make(**web: Any) -> Site:
        folder = tmp_path / f"site{len(sites)}"
        folder.mkdir()
        settings = make_settings(folder, identity={"sign_in": THROTTLE},
                                 storage={"state_url": state_url}, web=web)
        email = f"ada-{secrets.token_hex(4)}@example.com"  # fresh: Redis outlives a run
        app, ids, _ = await open_site(settings, email)
        site = Site(app, ids, email, hasher)
        sites.append(site)
        return site

    yield make
    for site in sites:
        for c in site.clients:
            await c.aclose()
        await site.app.aclose()


def random_ip() -> str:
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


def fresh() -> str:
    return f"new-{secrets.token_hex(5)}@example.com"


async def sign_up(c: httpx.AsyncClient, email: str, password: str = GOOD,
                  again: str | None = None, **headers: str) -> httpx.Response:
    token = c.cookies.get("gatehouse_signup_csrf")
    if token is None:
        token = csrf_field((await c.get("/signup")).text)
    return await c.post("/signup", headers=headers, data={
        "csrf": token, "email": email, "password": password,
        "password_again": password if again is None else again, "next": "/"})


async def test_off_by_default_signup_is_the_gateways_404_and_no_link(
        make_site: SiteFactory) -> None:
    site = await make_site()
    c = site.client(accept="application/json")
    unknown = await c.get("/no-such-page")
    for method in ("GET", "POST"):
        r = await c.request(method, "/signup")
        assert r.status_code == unknown.status_code == 404
        assert r.json()["error"]["code"] == unknown.json()["error"]["code"] == "unknown_url"
    page = (await site.client().get("/login")).text
    assert "/signup" not in page


async def test_a_new_account_lands_signed_in_on_the_signup_tier_and_org(
        make_site: SiteFactory) -> None:
    site = await make_site(signup=True, signup_tier="plus", signup_org="acme")
    await site.identity.accounts.create_org("acme", "standard")
    c = site.client()
    login = (await c.get("/login", params={"next": "/"})).text
    assert 'href="/signup?next=/"' in login
    form = await c.get("/signup")
    assert form.status_code == 200 and 'name="password_again"' in form.text
    cookie = form.headers["set-cookie"]
    assert cookie.startswith("gatehouse_signup_csrf=") and "Path=/signup" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    email = fresh()
    made = await sign_up(c, email.upper())
    assert made.status_code == 303 and made.headers["location"] == "/"
    cookies = made.headers.get_list("set-cookie")
    assert any(h.startswith("gatehouse_session=") and "HttpOnly" in h for h in cookies)
    assert any(h.startswith("gatehouse_signup_csrf=;") for h in cookies)  # used up
    user = await site.identity.accounts.user_by_email(email)
    assert user is not None and user.email == email and user.tier == "plus"
    assert user.org_id == (await site.identity.accounts.org("acme")).id
    chat = await c.get("/")
    assert chat.status_code == 200 and 'id="chat-data"' in chat.text and email in chat.text


async def test_csrf_is_checked_before_anything(make_site: SiteFactory) -> None:
    site = await make_site(signup=True)
    c = site.client()
    email = fresh()
    await c.get("/signup")
    for token in ("", "x" * 43):
        r = await c.post("/signup", data={"csrf": token, "email": email, "password": GOOD,
                                          "password_again": GOOD})
        assert r.status_code == 403 and "security token" in r.text
    stranger = site.client(accept="application/json")  # never had the cookie
    r = await stranger.post("/signup", data={"csrf": "y" * 43, "email": email,
                                             "password": GOOD, "password_again": GOOD})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    assert await site.identity.accounts.user_by_email(email) is None


@pytest.mark.parametrize("field,password,again,param", [
    ("email", GOOD, GOOD, "email"),
    ("short", "too short", "too short", "password"),
    ("long", "x" * 1025, "x" * 1025, "password"),
    ("mismatch", GOOD, GOOD + "!", "password_again"),
])
async def test_the_admin_apis_password_rules_are_a_400(
        make_site: SiteFactory, field: str, password: str, again: str, param: str) -> None:
    site = await make_site(signup=True)
    # fresh either way: Redis keeps the counters of an email across runs
    email = f"not an email {secrets.token_hex(4)}" if field == "email" else fresh()
    before = site.hasher.ops
    page = await sign_up(site.client(), email, password, again)
    assert page.status_code == 400 and 'role="alert"' in page.text
    api = await sign_up(site.client(accept="application/json"), email, password, again)
    assert api.status_code == 400
    error = api.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    assert error["param"] == param
    assert site.hasher.ops == before  # the rules need no hash
    assert await site.identity.accounts.user_by_email(email) is None


async def test_a_taken_email_is_answered_like_a_new_one(make_site: SiteFactory) -> None:
    site = await make_site(signup=True)
    taken = site.email  # made by an administrator, with PASSWORD
    before = site.hasher.ops
    new = await sign_up(site.client(), fresh())
    new_ops = site.hasher.ops - before
    before = site.hasher.ops
    same = await sign_up(site.client(), taken, PASSWORD)  # its own password: signed in
    taken_ops = site.hasher.ops - before
    assert new_ops == taken_ops == 1  # one argon2 operation either way
    for r in (new, same):
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert sorted(h.split("=")[0] for h in r.headers.get_list("set-cookie")) == [
            "gatehouse_session", "gatehouse_signup_csrf"]
        assert r.content == b""
    # another password for a taken email: no account, no sign-in, a plain refusal
    c = site.client(accept="application/json")
    before = site.hasher.ops
    refused = await sign_up(c, taken, "someone else's password")
    assert site.hasher.ops - before == 1
    assert refused.status_code == 400 and "gatehouse_session" not in c.cookies
    assert refused.json()["error"]["code"] == "signup_refused"
    user = await site.identity.accounts.user_by_email(taken)
    assert user is not None and passwords._verify(user.password_hash, PASSWORD)
    # a disabled account, even with its password, gets the same refusal
    await site.identity.accounts.update_user(taken, disabled=True)
    again = await sign_up(c, taken, PASSWORD)
    assert again.status_code == 400 and again.json()["error"] == refused.json()["error"]


async def test_the_sign_in_throttle_counts_sign_ups_before_any_hash(
        make_site: SiteFactory) -> None:
    site = await make_site(signup=True)
    c = site.client(accept="application/json")
    taken = site.email
    for _ in range(THROTTLE["account_free_failures"]):
        assert (await sign_up(c, taken, "not the password")).status_code == 400
    locking = await sign_up(c, taken, "not the password")
    assert locking.status_code == 400 and "try again in 5 seconds" in \
        locking.json()["error"]["message"] and locking.headers["retry-after"] == "5"
    before = site.hasher.ops
    locked = await sign_up(c, taken, PASSWORD)
    assert locked.status_code == 429 and site.hasher.ops == before  # nothing hashed
    assert locked.json()["error"]["code"] == "too_many_sign_ins"
    # one counter with sign-in: the email is locked there too
    token = csrf_field((await c.get("/login")).text)
    signin = await c.post("/login", data={"csrf": token, "email": taken, "password": PASSWORD})
    assert signin.status_code == 429


async def test_one_address_cannot_make_accounts_without_end(make_site: SiteFactory) -> None:
    site = await make_site(signup=True)
    ip, other = random_ip(), random_ip()
    # the free attempts, and the one past them (which locks the address) all make accounts
    made = [await sign_up(site.client(ip, accept="application/json"), fresh())
            for _ in range(THROTTLE["address_free_failures"] + 1)]
    assert [r.status_code for r in made] == [303] * len(made)
    refused = await sign_up(site.client(ip, accept="application/json"), fresh())
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    elsewhere = await sign_up(site.client(other), fresh())
    assert elsewhere.status_code == 303


async def test_a_missing_signup_org_is_a_503_not_a_500(make_site: SiteFactory) -> None:
    site = await make_site(signup=True, signup_org="nobody")
    r = await sign_up(site.client(accept="application/json"), fresh())
    assert r.status_code == 503 and r.json()["error"]["code"] == "identity_unavailable"


@pytest.mark.parametrize("tier,words", [("standard", "is a api tier"),
                                        ("gold", "no tier named 'gold'")])
def test_signup_tier_must_be_a_web_tier(tmp_path: Path, tier: str, words: str) -> None:
    path = tmp_path / "gatehouse.toml"
    path.write_text(f'[web]\nsignup = true\nsignup_tier = "{tier}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "signup_tier" in str(caught.value) and words in str(caught.value)


async def test_two_sign_ups_at_once_make_one_account_and_next_stays_on_this_site(
        make_site: SiteFactory) -> None:
    import asyncio

    site = await make_site(signup=True)
    email = fresh()
    first, second = site.client(), site.client()
    for c in (first, second):
        await c.get("/signup")
    same = await asyncio.gather(sign_up(first, email), sign_up(second, email))
    assert [r.status_code for r in same] == [303, 303]  # the loser signs in to it
    assert len([u for u in await site.identity.accounts.users() if u.email == email]) == 1
    c = site.client()
    token = csrf_field((await c.get("/signup", params={"next": "//evil.example"})).text)
    away = await c.post("/signup", data={"csrf": token, "email": fresh(), "password": GOOD,
                                         "password_again": GOOD, "next": "//evil.example"})
    assert away.status_code == 303 and away.headers["location"] == "/"
    huge = await c.post("/signup", content=b"a=" + b"x" * 20_000,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
