"""Issue 12, the challenge bypass: an ``Authorization: Bearer`` header (any string, never
verified) used to skip the human check on the web pages. Now the web pages are never exempt,
whatever a request carries; on the API paths only a caller identity vouches for is — a key
that verifies (a forged one is a 401 and an offence) or a session — and in open mode an
anonymous caller, with no key or a forged one, meets the challenge rule like a web visitor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.identity.passwords import hash_password
from gatehouse.identity.service import IdentityService
from gatehouse.server import Gateway
from tests.unit.conftest import make_settings
from tests.unit.test_edge_challenge import BROWSER, answer, read_page
from tests.unit.test_edge_challenge_app import EVERYTHING, metric

EMAIL, PASSWORD = "ada@example.com", "correct horse battery"
FORGED = "Bearer x"
# the web pages of today and the chat's to come (anything outside the API prefixes)
WEB = [("GET", "/login"), ("POST", "/login"), ("GET", "/account"), ("GET", "/logout"),
       ("POST", "/logout"), ("GET", "/"), ("GET", "/c/chat-123"), ("GET", "/nope")]


@dataclass
class Site:
    app: Gateway
    key: str
    admin_key: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, ip: str = "198.51.100.7", **headers: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(ip, 4000)),
                              base_url="http://gw", headers={**BROWSER, **headers})
        self.clients.append(c)
        return c


@pytest.fixture(params=[True], ids=["require_key"])
async def site(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    settings = make_settings(tmp_path, identity={"require_key": request.param},
                             edge={**EVERYTHING, "detector": {"max_unauthorized": 3}})
    identity = IdentityService(settings)
    app = create_app(settings, identity=identity)
    await app.startup()
    await identity.accounts.create_org("acme", "free")
    await identity.accounts.create_project("acme/bot")
    key, _ = await identity.accounts.create_key("acme/bot")
    admin_key, _ = await identity.accounts.create_key(None, scope="admin")
    await identity.accounts.create_user(EMAIL, hash_password(PASSWORD), None, "free")
    s = Site(app, key, admin_key)
    yield s
    for c in s.clients:
        await c.aclose()
    await app.aclose()


def challenged(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.headers.get("gatehouse-mitigated") == "challenge"


both_modes = pytest.mark.parametrize("site", [True, False], ids=["require_key", "open"],
                                     indirect=True)


@both_modes
async def test_api_with_a_valid_key_is_exempt(site: Site) -> None:
    c = site.client(authorization=f"Bearer {site.key}")
    r = await c.get("/v1/models")
    assert r.status_code == 200 and "gatehouse-mitigated" not in r.headers
    admin = await c.get("/admin/v1/orgs", headers={"authorization": f"Bearer {site.admin_key}"})
    assert admin.status_code == 200 and "gatehouse-mitigated" not in admin.headers


async def test_api_with_a_forged_key_is_a_401_that_counts_towards_a_ban(site: Site) -> None:
    c = site.client(authorization=FORGED, accept="application/json")
    for _ in range(4):  # max_unauthorized = 3: the fourth 401 trips the detector
        r = await c.get("/v1/models")
        assert r.status_code == 401 and not challenged(r)
        assert r.json()["error"]["code"] == "invalid_api_key"
    for _ in range(100):  # the ban is written in the background
        r = await c.get("/v1/models")
        if r.status_code == 403:
            break
        await asyncio.sleep(0.02)
    assert r.status_code == 403 and r.json()["error"]["code"] == "1020"


@pytest.mark.parametrize("site", [False], ids=["open"], indirect=True)
async def test_open_mode_anonymous_api_callers_are_challenged_until_cleared(site: Site) -> None:
    """Open mode serves calls without a key, or with a key that is not ours, as anonymous:
    nobody vouches for them, so the challenge rule applies, as on the web path."""
    c = site.client(accept="application/json")
    for headers in ({}, {"authorization": FORGED}, {"authorization": "Bearer sk-elsewhere"}):
        r = await c.get("/v1/models", headers=headers)
        assert challenged(r) and r.json()["error"]["code"] == "challenge_required", headers
    # a gatehouse key that does not verify is still a 401 (and an offence), not anonymous
    r = await c.get("/v1/models", headers={"authorization": "Bearer gh-forged-key"})
    assert r.status_code == 401 and not challenged(r)
    # a browser that passed the check gets through: the check, not a key, is asked of it
    browser = site.client()
    page = read_page(await browser.get("/login"))
    assert (await answer(browser, page)).status_code == 303
    r = await browser.get("/v1/models", headers={"accept": "application/json"})
    assert r.status_code == 200 and "gatehouse-mitigated" not in r.headers


@both_modes
@pytest.mark.parametrize("bearer", ["forged", "valid"])
async def test_every_web_path_is_challenged_whatever_key_it_carries(site: Site,
                                                                    bearer: str) -> None:
    c = site.client(authorization=FORGED if bearer == "forged" else f"Bearer {site.key}")
    for method, path in WEB:
        r = await c.request(method, path, data={"email": EMAIL, "password": PASSWORD}
                            if method == "POST" else None)
        assert challenged(r), (method, path, r.status_code)
        assert "Checking your browser" in r.text
    text = (await site.client().get("/metrics")).text
    assert metric(text, rule="all", result="issued", reason="page") == len(WEB)


async def test_the_reproduction_no_longer_signs_in(site: Site) -> None:
    """The report's steps: form, sign-in and account page, each with ``Bearer x``."""
    c = site.client(authorization=FORGED)
    assert challenged(await c.get("/login"))
    signed = await c.post("/login", data={"email": EMAIL, "password": PASSWORD})
    assert challenged(signed) and "gatehouse_session" not in signed.headers.get(
        "set-cookie", "")
    assert challenged(await c.get("/account"))
    # a script on the web path gets the JSON twin, not a pass
    r = await c.get("/account", headers={"accept": "application/json"})
    assert challenged(r) and r.json()["error"]["code"] == "challenge_required"
