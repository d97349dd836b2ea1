"""One RequestRecord per request (in-process): error classes, what the stages decided, the
mounted apps, and lookup by any id through the admin API and the customer endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.identity.service import IdentityService
from gatehouse.server import Gateway
from gatehouse.telemetry.record import RequestRecord, error_class
from gatehouse.telemetry.requestlog import RequestLog
from tests.unit.conftest import make_settings

CHAT = "/v1/chat/completions"
HELLO = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("status", "code", "kind", "expected"), [
    (200, None, "ok", "ok"),
    (302, None, "ok", "ok"),
    (400, "invalid_value", "error", "client_error"),
    (404, "model_not_found", "error", "client_error"),
    (401, "invalid_api_key", "error", "auth"),
    (403, "insufficient_permissions", "error", "auth"),
    (429, "rate_limit_exceeded", "error", "rate_limited"),
    (429, "insufficient_quota", "error", "quota"),
    (403, "1020", "error", "blocked"),
    (403, "challenge_required", "ok", "blocked"),
    (403, "cookies_required", "error", "blocked"),
    (500, "upstream_error", "error", "server_error"),
    (500, "internal_error", "error", "server_error"),
    (502, None, "error", "server_error"),
    (503, "upstream_unavailable", "error", "unavailable"),
    (503, "quota_unavailable", "error", "unavailable"),
    (503, "at_capacity", "error", "at_capacity"),
    (504, "upstream_timeout", "error", "timeout"),
    (499, None, "client_disconnected", "client_gone"),
    (200, None, "client_disconnected", "client_gone"),
])
def test_error_classes(status: int, code: str | None, kind: str, expected: str) -> None:
    assert error_class(status, code, kind) == expected


@dataclass
class Site:
    app: Gateway
    identity: IdentityService
    log: RequestLog
    client: httpx.AsyncClient
    admin_key: str

    async def find(self, any_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/admin/v1/requests/{any_id}",
                                  headers={"authorization": f"Bearer {self.admin_key}"})
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    settings = make_settings(tmp_path, identity={"require_key": True}, edge={
        "rules": [{"action": "deny", "cidr": "192.0.2.0/24", "name": "testnet"},
                  {"action": "challenge", "path": "^/account", "name": "pages"}]})
    identity = IdentityService(settings)
    app = create_app(settings, identity=identity)
    await app.startup()
    plain, _ = await identity.accounts.create_key(None, scope="admin")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 1)),
                               base_url="http://gw")
    stage = app.routes[CHAT].pipeline.stages[0]
    try:
        yield Site(app, identity, stage.request_log, client, plain)  # type: ignore[attr-defined]
    finally:
        await client.aclose()
        await app.aclose()


async def org_key(site: Site, org: str) -> str:
    await site.identity.accounts.create_org(org, "standard")
    await site.identity.accounts.create_project(f"{org}/bot")
    plain, _ = await site.identity.accounts.create_key(f"{org}/bot")
    return plain


async def test_success_records_every_stage_decision(site: Site) -> None:
    key = await org_key(site, "acme")
    r = await site.client.post(CHAT, json=HELLO, headers={
        "authorization": f"Bearer {key}", "x-client-request-id": "my-call-1"})
    assert r.status_code == 200
    rec = await site.find(r.headers["x-request-id"])
    assert rec["object"] == "request" and rec["request_id"] == r.headers["x-request-id"]
    assert rec["client_request_id"] == "my-call-1"
    assert (rec["component"], rec["endpoint"], rec["model"]) == ("api", "chat.completions",
                                                                 "demo")
    assert (rec["status"], rec["error_class"], rec["edge"]) == (200, "ok", "pass")
    assert rec["quota"] == "unlimited"  # no limits configured: nothing to check
    assert rec["attempts"] == ["demo"] and rec["backend"] == "demo"
    assert rec["upstream_status"] == 200 and rec["prompt_tokens"] > 0
    assert rec["org"] and rec["key_id"] and rec["tier"] and rec["client"] == "10.0.0.1"
    assert rec["latency_ms"] >= rec["ttfb_ms"] > 0 and rec["stream"] is False
    # found by the client request id as well, from the buffer and after the flush
    assert (await site.find("my-call-1"))["request_id"] == rec["request_id"]
    await site.log.flush()
    assert not site.log.buffer
    assert (await site.find("my-call-1"))["request_id"] == rec["request_id"]


async def test_errors_denials_and_mounted_apps_are_recorded(site: Site) -> None:
    c = site.client
    bad = await c.post(CHAT, json=HELLO, headers={"authorization": "Bearer gh-nope"})
    assert bad.status_code == 401
    rec = await site.find(bad.headers["x-request-id"])
    assert (rec["error_class"], rec["error_code"], rec["component"]) == (
        "auth", "invalid_api_key", "api")

    unknown = await c.get("/v1/nothing-here")
    assert (await site.find(unknown.headers["x-request-id"]))["error_code"] == "unknown_url"

    denied_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=site.app, client=("192.0.2.7", 1)),
        base_url="http://gw")
    async with denied_client:
        denied = await denied_client.get("/v1/models")
        page = await denied_client.get("/login", headers={"accept": "text/html"})
    ray = denied.headers["gatehouse-ray"]
    rec = await site.find(ray)
    assert rec["request_id"] == denied.headers["x-request-id"]
    assert (rec["status"], rec["error_class"], rec["edge"], rec["ray_id"]) == (
        403, "blocked", "deny", ray)
    assert rec["client"] == "192.0.2.7" and "testnet" in rec["error_cause"]
    # a mounted page denied by the guard: still one record, by its Ray ID
    rec = await site.find(page.headers["gatehouse-ray"])
    assert (rec["component"], rec["error_code"], rec["edge"], rec["client"]) == (
        "login", "1020", "deny", "192.0.2.7")

    challenged = await c.get("/account", headers={"accept": "text/html"})
    assert challenged.headers["gatehouse-mitigated"] == "challenge"
    rec = await site.find(challenged.headers["gatehouse-ray"])
    assert (rec["component"], rec["error_class"], rec["edge"]) == ("web", "blocked",
                                                                   "challenge")

    login = await c.get("/login")
    rec = await site.find(login.headers["x-request-id"])
    assert (rec["component"], rec["status"], rec["endpoint"], rec["edge"]) == (
        "login", 200, "login", "pass")

    org = await c.get("/admin/v1/orgs/nope", headers={
        "authorization": f"Bearer {site.admin_key}"})
    rec = await site.find(org.headers["x-request-id"])
    assert (rec["component"], rec["endpoint"], rec["status"], rec["error_code"]) == (
        "admin", "admin/v1/orgs/{org}", 404, "not_found")
    assert rec["key_id"]
    nobody = await c.get("/admin/v1/orgs/secret-name")
    rec = await site.find(nobody.headers["x-request-id"])
    assert (rec["component"], rec["endpoint"], rec["error_class"], rec["error_code"]) == (
        "admin", "admin", "auth", "missing_api_key")


async def test_a_client_id_with_a_percent_sign_is_found_by_its_customer(site: Site) -> None:
    """The path arrives decoded: decoding it again made ``job%41x`` unfindable (both
    ``/v1/requests/job%41x`` and ``…/job%2541x`` searched for ``jobAx``)."""
    a = await org_key(site, "org-a")
    sent = await site.client.post(CHAT, json=HELLO, headers={
        "authorization": f"Bearer {a}", "x-client-request-id": "job%41x"})
    await site.log.flush()
    r = await site.client.get("/v1/requests/job%2541x", headers={"authorization": f"Bearer {a}"})
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == sent.headers["x-request-id"]


async def test_customers_see_their_own_requests_only(site: Site) -> None:
    a, b = await org_key(site, "org-a"), await org_key(site, "org-b")
    mine = await site.client.post(CHAT, json=HELLO, headers={
        "authorization": f"Bearer {a}", "x-client-request-id": "shared-name"})
    theirs = await site.client.post(CHAT, json=HELLO, headers={
        "authorization": f"Bearer {b}", "x-client-request-id": "shared-name"})
    await site.log.flush()
    as_a = {"authorization": f"Bearer {a}"}
    r = await site.client.get(f"/v1/requests/{mine.headers['x-request-id']}", headers=as_a)
    assert r.status_code == 200
    view = r.json()
    assert view["request_id"] == mine.headers["x-request-id"]
    assert "error_cause" not in view and "client" not in view
    # the same client request id in two orgs: each sees its own
    r = await site.client.get("/v1/requests/shared-name", headers=as_a)
    assert r.json()["request_id"] == mine.headers["x-request-id"]
    assert r.json()["other_matches"] == []
    other = await site.client.get(f"/v1/requests/{theirs.headers['x-request-id']}",
                                  headers=as_a)
    unknown = await site.client.get("/v1/requests/req_00000000000000000000000000",
                                    headers=as_a)
    assert other.status_code == unknown.status_code == 404
    o, u = other.json(), unknown.json()
    assert o["error"]["code"] == u["error"]["code"] == "not_found"
    assert o["error"]["message"].replace(theirs.headers["x-request-id"], "ID") == \
        u["error"]["message"].replace("req_00000000000000000000000000", "ID")
    bad = await site.client.get("/v1/requests/" + "x" * 600, headers=as_a)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "id"
    nokey = await site.client.get(f"/v1/requests/{mine.headers['x-request-id']}")
    assert nokey.status_code == 401
    admin_bad = await site.client.get("/admin/v1/requests/" + "x" * 600,
                                      headers={"authorization": f"Bearer {site.admin_key}"})
    assert admin_bad.status_code == 400


def test_record_builds_without_formatting() -> None:
    # text is made when written, not on the request path
    assert "time" not in RequestRecord.__slots__ and "at" in RequestRecord.__slots__
