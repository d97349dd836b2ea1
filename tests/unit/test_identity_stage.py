"""The identity and service-tier stages, driven through the whole app in-process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.identity.service import IdentityService
from tests.unit.conftest import make_settings

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


class World:
    def __init__(self, client: httpx.AsyncClient, identity: IdentityService) -> None:
        self.client, self.identity = client, identity

    async def key(self, ref: str = "acme/bot", **kw: Any) -> str:
        plain, _ = await self.identity.accounts.create_key(ref, **kw)
        return plain

    async def chat(self, key: str | None, body: dict[str, Any] | None = None,
                   **headers: str) -> httpx.Response:
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return await self.client.post("/v1/chat/completions", json=body or CHAT,
                                      headers=headers)


async def world_for(tmp: Path, **identity: Any) -> AsyncIterator[World]:
    settings = make_settings(tmp, identity={"require_key": True, **identity})
    ids = IdentityService(settings)
    app = create_app(settings, identity=ids)
    await app.startup()
    await ids.accounts.create_org("acme", "standard")
    await ids.accounts.create_project("acme/bot")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    yield World(client, ids)
    await client.aclose()
    await app.aclose()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in world_for(tmp_path):
        yield w


def error(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["request_id"] == r.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


async def test_valid_key_is_served(world: World) -> None:
    r = await world.chat(await world.key())
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


async def test_missing_key(world: World) -> None:
    r = await world.chat(None)
    e = error(r)
    assert r.status_code == 401 and e["code"] == "missing_api_key"
    assert "Authorization: Bearer" in e["message"]
    assert (await world.client.get("/v1/models")).status_code == 401


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer    ", "token x"])
async def test_malformed_authorization(world: World, header: str) -> None:
    r = await world.client.post("/v1/chat/completions", json=CHAT,
                                headers={"authorization": header})
    assert r.status_code == 401 and error(r)["code"] == "invalid_api_key"


async def test_unknown_revoked_expired_keys_get_the_same_answer(world: World) -> None:
    unknown = "gh-bot-" + "A" * 46
    revoked = await world.key()
    row = next(k for k in await world.identity.accounts.key_infos() if k.display[-4:] ==
               revoked[-4:])
    await world.identity.accounts.revoke_key(row.id)
    await world.identity.key_changed(world.identity.keys.digest(revoked))
    expired = await world.key(expires_at=time.time() + 0.2)
    time.sleep(0.25)
    answers = []
    for key in (unknown, revoked, expired, "sk-proj-abcdefabcdef1234"):
        r = await world.chat(key)
        assert r.status_code == 401
        e = error(r)
        assert e["code"] == "invalid_api_key" and e["type"] == "invalid_request_error"
        assert key not in e["message"] and key[:6] + "***" + key[-4:] in e["message"]
        answers.append(e["message"].replace(key[:6] + "***" + key[-4:], "KEY"))
    assert len(set(answers)) == 1


async def test_admin_key_cannot_call_models(world: World) -> None:
    admin, _ = await world.identity.accounts.create_key(None, scope="admin")
    r = await world.chat(admin)
    assert r.status_code == 403 and error(r)["code"] == "insufficient_permissions"


async def test_principal_reaches_the_access_record(world: World) -> None:
    key = await world.key(tier="priority")
    r = await world.chat(key)
    assert r.status_code == 200


@pytest.mark.parametrize(("tier", "asked", "status", "code"), [
    ("standard", "flex", 200, None),
    ("standard", "auto", 200, None),
    ("standard", "default", 200, None),
    ("standard", "standard", 200, None),
    ("standard", "priority", 403, "service_tier_not_allowed"),
    ("priority", "standard", 200, None),
    ("flex", "priority", 403, "service_tier_not_allowed"),
    ("standard", "platinum", 400, "invalid_value"),
    ("standard", 7, 400, "invalid_value"),
])
async def test_service_tier(world: World, tier: str, asked: Any, status: int,
                            code: str | None) -> None:
    r = await world.chat(await world.key(tier=tier), {**CHAT, "service_tier": asked})
    assert r.status_code == status, r.text
    if code:
        e = error(r)
        assert e["code"] == code and e["param"] == "service_tier"


async def test_open_mode_serves_foreign_keys_as_anonymous_but_checks_ours(
        tmp_path: Path) -> None:
    async for w in world_for(tmp_path, require_key=False):
        assert (await w.chat(None)).status_code == 200
        assert (await w.chat("sk-anything")).status_code == 200
        bad = await w.chat("gh-bot-" + "A" * 46)
        assert bad.status_code == 401 and error(bad)["code"] == "invalid_api_key"
        assert (await w.chat(await w.key())).status_code == 200


async def test_store_down_unknown_key_is_503_not_500(world: World) -> None:
    good = await world.key()
    assert (await world.chat(good)).status_code == 200
    fresh = await world.key()
    await world.identity.store.engine.dispose()
    db = world.identity.store.url.database
    assert db is not None
    Path(db).chmod(0o000)
    Path(db).rename(db + ".gone")
    Path(db).mkdir()  # a directory where the database was: every query fails
    try:
        assert (await world.chat(good)).status_code == 200  # cached
        r = await world.chat(fresh)
        assert r.status_code == 503 and error(r)["code"] == "identity_unavailable"
        assert "retry-after" in r.headers
    finally:
        Path(db).rmdir()
        Path(db + ".gone").rename(db)
        Path(db).chmod(0o644)
