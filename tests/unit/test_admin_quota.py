"""/admin/v1/limits and /admin/v1/usage."""

from __future__ import annotations

from tests.unit.test_admin_api import HELLO, Admin, admin, error, ok, project  # noqa: F401

__all__ = ["admin"]


async def test_overrides_apply_to_the_gateway(admin: Admin) -> None:
    await project(admin, "acme/bot")
    created = ok(await admin.post("/keys", {"project": "acme/bot"}), 201)
    key, key_id = created["key"], created["id"]
    put = await admin.client.put("/admin/v1/limits", headers=admin.auth, json={
        "scope": "key", "name": key_id, "field": "requests_per_minute", "value": 1})
    assert ok(put)["value"] == 1
    listed = ok(await admin.get("/limits"))["data"]
    assert listed == [{"scope": "key", "scope_id": key_id, "field": "requests_per_minute",
                       "value": 1}]
    # the admin API announced it; this replica's snapshot reloads at once
    quota = next(s for s in admin.client._transport.app.routes[  # type: ignore[attr-defined]
        "/v1/chat/completions"].pipeline.stages if s.name == "quota")
    await quota.overrides.load()
    assert (await admin.chat(key)).status_code == 200
    refused = await admin.chat(key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == \
        "rate_limit_exceeded"
    cleared = await admin.client.delete("/admin/v1/limits", headers=admin.auth,
                                        params={"scope": "key", "name": key_id})
    assert ok(cleared) == {"cleared": 1}


async def test_override_errors(admin: Admin) -> None:
    await project(admin, "acme/bot")
    put = admin.client.put
    error(await put("/admin/v1/limits", headers=admin.auth, json={
        "scope": "org", "name": "acme", "field": "rpm", "value": 5}), 400, "invalid_value",
        "field")
    error(await put("/admin/v1/limits", headers=admin.auth, json={
        "scope": "org", "name": "acme", "field": "tokens_per_day", "value": 0}), 400,
        "invalid_value", "value")
    error(await put("/admin/v1/limits", headers=admin.auth, json={
        "scope": "org", "name": "nope", "field": "tokens_per_day", "value": 5}), 404,
        "not_found")
    bad_scope = await put("/admin/v1/limits", headers=admin.auth, json={
        "scope": "galaxy", "name": "acme", "field": "tokens_per_day", "value": 5})
    assert bad_scope.status_code == 400


async def test_usage_history(admin: Admin) -> None:
    await project(admin, "acme/bot")
    key = ok(await admin.post("/keys", {"project": "acme/bot"}), 201)["key"]
    replies = [await admin.chat(key) for _ in range(3)]
    tokens = sum(r.json()["usage"]["total_tokens"] for r in replies)
    quota = next(s for s in admin.client._transport.app.routes[  # type: ignore[attr-defined]
        "/v1/chat/completions"].pipeline.stages if s.name == "quota")
    await quota.book.flush()
    rows = ok(await admin.get("/usage", params={"org": "acme", "by": "project,model"}))["data"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["project"], row["model"], row["requests"], row["total_tokens"]) == \
        ("bot", "demo", 3, tokens)
    error(await admin.get("/usage", params={"org": "acme", "by": "planet"}), 400,
          "invalid_value", "by")
    error(await admin.get("/usage", params={"org": "nope"}), 404, "not_found")
