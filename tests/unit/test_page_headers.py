"""Every HTML answer the gateway makes carries the page headers (a CSP that runs no script but
the challenge's solver, no framing, nosniff, a referrer policy, no-store), whichever part of
the gateway made it; JSON error answers carry nosniff."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.htmlpage import source_hash
from gatehouse.identity.passwords import hash_password
from gatehouse.identity.service import IdentityService
from gatehouse.server import Gateway
from tests.unit.conftest import make_settings
from tests.unit.test_web_sessions import BROWSER, EMAIL, PASSWORD, sign_in

DENIED, CHALLENGED, VISITOR = "192.0.2.5", "198.51.100.7", "10.0.0.1"
EDGE = {"challenge_difficulty": 1, "rules": [
    {"action": "deny", "cidr": "192.0.2.0/24"},
    {"action": "challenge", "cidr": "198.51.100.0/24"}]}


@dataclass
class Site:
    app: Gateway
    identity: IdentityService
    clients: list[httpx.AsyncClient]

    def at(self, ip: str = VISITOR, **headers: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(ip, 5555),
                                                            raise_app_exceptions=False),
                              base_url="http://gw", headers={**BROWSER, **headers})
        self.clients.append(c)
        return c


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    settings = make_settings(tmp_path, edge=EDGE)
    identity = IdentityService(settings)
    app = create_app(settings, identity=identity)
    await app.startup()
    await identity.accounts.create_user(EMAIL, hash_password(PASSWORD), None, "free")
    made = Site(app, identity, [])
    yield made
    for c in made.clients:
        await c.aclose()
    await app.aclose()


async def signed_in(site: Site) -> httpx.AsyncClient:
    c = site.at()
    assert (await sign_in(c)).status_code == 303
    return c


async def broken(site: Site, monkeypatch: pytest.MonkeyPatch) -> httpx.Response:
    c = await signed_in(site)

    async def bug(session_id: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(site.identity.sessions, "load", bug)
    return await c.get("/account")


Ask = Callable[[Site, pytest.MonkeyPatch], Awaitable[httpx.Response]]
PAGES: dict[str, tuple[int, Ask]] = {
    # the pipeline's error pages
    "1020 page (API path)": (403, lambda s, m: s.at(DENIED).get("/v1/models")),
    "404 page": (404, lambda s, m: s.at().get("/nothing-here")),
    "405 page": (405, lambda s, m: s.at().get("/v1/chat/completions")),
    "401 page": (401, lambda s, m: s.at(authorization="Bearer gh-nope-0").get("/v1/models")),
    # the edge in front of the mounted apps
    "1020 page (web path)": (403, lambda s, m: s.at(DENIED).get("/login")),
    "challenge page": (403, lambda s, m: s.at(CHALLENGED).get("/account")),
    "challenge refused page": (403, lambda s, m: s.at().post(
        "/_gatehouse/challenge/verify", data={"token": "forged", "counter": "1"})),
    "challenge 404 page": (404, lambda s, m: s.at().get("/_gatehouse/challenge/nope")),
    # the web app's pages and its framework's errors
    "sign-in page": (200, lambda s, m: s.at().get("/login")),
    "sign-in failed page": (401, lambda s, m: sign_in(s.at(), password="wrong password")),
    "account page": (200, lambda s, m: _account(s)),
    "web 404 page": (404, lambda s, m: s.at().get("/login/nothing")),
    "web 405 page": (405, lambda s, m: s.at().put("/account")),
    "web 500 page": (500, broken),
    "csrf refused page": (403, lambda s, m: s.at().post("/login", data={"email": EMAIL})),
}


async def _account(site: Site) -> httpx.Response:
    return await (await signed_in(site)).get("/account")


def directives(csp: str) -> dict[str, str]:
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] if " " in part else ""
            for part in (p.strip() for p in csp.split(";")) if part}


@pytest.mark.parametrize("kind", list(PAGES))
async def test_every_html_answer_has_the_page_headers(site: Site, kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    status, ask = PAGES[kind]
    r = await ask(site, monkeypatch)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["cache-control"] == "no-store"
    csp = directives(r.headers["content-security-policy"])
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'" and csp["form-action"] == "'self'"
    # what the page holds inline is exactly what its CSP lets run: the page works as sent
    styles = re.findall(r"<style>(.*?)</style>", r.text, re.DOTALL)
    scripts = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    assert styles and csp["style-src"] == " ".join(source_hash(s) for s in styles)
    assert csp.get("script-src", "") == " ".join(source_hash(s) for s in scripts)
    assert "<script src" not in r.text and "unsafe" not in r.headers["content-security-policy"]
    assert bool(scripts) == (kind == "challenge page")


async def test_the_admin_docs_page_may_load_swagger_and_nothing_else(site: Site) -> None:
    r = await site.at().get("/admin/v1/docs")
    assert r.status_code == 200 and "SwaggerUIBundle" in r.text
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = directives(r.headers["content-security-policy"])
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"] == "'self'"
    scripts = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    assert scripts and set(csp["script-src"].split()) == \
        {"'self'", *(source_hash(s) for s in scripts)}  # its own copy of Swagger UI, no CDN


JSON_ERRORS: dict[str, Callable[[Site], Awaitable[httpx.Response]]] = {
    "API 404": lambda s: s.at(accept="application/json").get("/nothing-here"),
    "API 1020": lambda s: s.at(DENIED, accept="application/json").get("/v1/models"),
    "API 400": lambda s: s.at(accept="application/json").post("/v1/chat/completions",
                                                              content=b"{"),
    "challenge for a script": lambda s: s.at(CHALLENGED, accept="application/json").get(
        "/account"),
    "admin 401": lambda s: s.at().get("/admin/v1/orgs"),
    "admin 404": lambda s: s.at().get("/admin/v1/nothing"),
    "web 404 for a script": lambda s: s.at(accept="application/json").get("/login/nothing"),
}


@pytest.mark.parametrize("kind", list(JSON_ERRORS))
async def test_json_errors_are_nosniff(site: Site, kind: str) -> None:
    r = await JSON_ERRORS[kind](site)
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.json()["error"]["code"]


async def test_successful_json_answers_stay_as_they_were(site: Site) -> None:
    # the API's hot path is not touched: only errors and pages get the headers
    r = await site.at(accept="application/json").get("/v1/models")
    assert r.status_code == 200 and "content-security-policy" not in r.headers

