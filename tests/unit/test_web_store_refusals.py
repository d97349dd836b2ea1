"""A value the store cannot hold — a NUL, which PostgreSQL refuses in text — is the request's
fault: the answer any such request gets (401 for a sign-in, 400 otherwise), never 503
identity_unavailable, which the status page counts as the service failing. Run on SQLite and
on a real PostgreSQL (a schema of its own)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.identity.passwords import hash_password
from gatehouse.identity.service import IdentityService
from gatehouse.store.db import Store
from tests.support.services import PG_URL, pg_schema
from tests.unit.conftest import make_settings

EMAIL, PASSWORD = "ada@example.com", "correct horse battery"
JSON = {"accept": "application/json"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def site(request: pytest.FixtureRequest,
               tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, IdentityService]]:
    settings = make_settings(tmp_path, identity={"require_key": True}, web={"signup": True})

    async def run(store: Store | None) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                              IdentityService]]:
        identity = IdentityService(settings, store=store)
        app = create_app(settings, identity=identity)
        await app.startup()
        await identity.accounts.create_user(EMAIL, hash_password(PASSWORD), None, "free")
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app,
                                                                 client=("10.0.0.1", 1)),
                                   base_url="http://gw", headers=JSON)
        try:
            yield client, identity
        finally:
            await client.aclose()
            await app.aclose()

    if request.param == "sqlite":
        async for made in run(None):
            yield made
        return
    async for schema in pg_schema():
        async for made in run(Store(PG_URL, schema=schema)):
            yield made


async def form_token(c: httpx.AsyncClient, path: str) -> str:
    page = await c.get(path, headers={"accept": "text/html"})
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def error(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["error"]["code"] == code
    return dict(body["error"])


async def test_sign_in_with_a_nul_in_the_email_is_a_wrong_password(site: tuple[
        httpx.AsyncClient, IdentityService]) -> None:
    c, _ = site
    token = await form_token(c, "/login")
    for email in ("x\x00@x.io", "ada\x00@example.com", "ada@example.com\x01"):
        r = await c.post("/login", data={"csrf": token, "email": email, "password": PASSWORD})
        assert error(r, 401, "invalid_credentials")["message"] == "Email or password is wrong."


async def test_sign_up_and_the_admin_api_refuse_a_control_character_in_an_email(site: tuple[
        httpx.AsyncClient, IdentityService]) -> None:
    c, identity = site
    token = await form_token(c, "/signup")
    for email in ("x\x00@x.io", "x\x1b@x.io"):
        r = await c.post("/signup", data={"csrf": token, "email": email, "password": PASSWORD,
                                          "password_again": PASSWORD})
        assert error(r, 400, "invalid_value")["param"] == "email"
    admin, _ = await identity.accounts.create_key(None, scope="admin")
    auth = {"authorization": f"Bearer {admin}"}
    r = await c.post("/admin/v1/users", headers=auth,
                     json={"email": "x\x00@x.io", "password": PASSWORD})
    assert error(r, 400, "invalid_value")["param"] == "email"
    r = await c.patch("/admin/v1/users/x%00@x.io", headers=auth, json={"tier": "free"})
    error(r, 404, "not_found")
    assert [u.email for u in await identity.accounts.users()] == [EMAIL]


async def test_a_nul_in_the_chat_is_never_a_store_outage(site: tuple[
        httpx.AsyncClient, IdentityService]) -> None:
    c, identity = site
    await c.post("/login", data={"csrf": await form_token(c, "/login"), "email": EMAIL,
                                 "password": PASSWORD})
    session = await identity.sessions.load(c.cookies["gatehouse_session"])
    assert session is not None
    csrf = {"x-csrf-token": session.csrf}
    sent = await c.post("/chat/send", headers=csrf, json={"model": "demo", "content": "hi"})
    assert sent.status_code == 200
    cid = (await c.get("/chat/conversations")).json()["data"][0]["id"]
    answers = [
        await c.post("/chat/send", headers=csrf, json={"model": "demo", "content": "a\x00"}),
        await c.patch(f"/chat/conversations/{cid}", headers=csrf, json={"title": "a\x00"}),
        await c.get("/chat/conversations", params={"find": "a\x00"}),
        await c.get("/chat/conversations/a%00"),
        await c.get("/c/a%00", headers={"accept": "text/html"})]
    for r in answers:  # PostgreSQL refuses them (400), SQLite keeps or finds nothing
        assert r.status_code < 500, (r.request.url, r.text)
        if r.status_code == 400:
            assert "cannot be stored" in r.text and r.headers["x-request-id"] in r.text


async def test_a_nul_in_an_admin_path_or_query_is_not_found_not_a_500(site: tuple[
        httpx.AsyncClient, IdentityService]) -> None:
    """PostgreSQL refused the lookup's parameter: a 500 (found by attacking the admin API).
    The store's NUL guard looks it up as U+FFFD (no name holds one); a data error left is the
    request's 4xx."""
    c, identity = site
    admin, _ = await identity.accounts.create_key(None, scope="admin")
    auth = {"authorization": f"Bearer {admin}"}
    for r in (await c.delete("/admin/v1/limits", headers=auth,
                             params={"scope": "org", "name": "a\x00"}),
              await c.delete("/admin/v1/edge/rules/a%00", headers=auth),
              await c.get("/admin/v1/requests/a%00", headers=auth)):
        assert 400 <= r.status_code < 500, (r.request.url, r.text)
