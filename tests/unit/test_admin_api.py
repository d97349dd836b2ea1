"""The admin API (/admin/v1/): every route's success, every refusal in OpenAI's error shape
with a request id, and keys made here working (and stopping) on the gateway itself."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gatehouse.admin.api import MAX_BODY_BYTES
from gatehouse.admin.models import PAGE_PIECE, KeyOut, OrgOut, Page, ProjectOut, UserOut
from gatehouse.app import create_app
from gatehouse.identity.service import IdentityService
from gatehouse.identity.verifier import StoreUnavailable
from gatehouse.server import Gateway
from gatehouse.store import accounts as accounts_module
from gatehouse.store.account_tables import ApiKey, Org, Project, User
from gatehouse.store.accounts import Accounts
from gatehouse.store.edge import EdgeRecords
from tests.support.loops import json_pieces_watched
from tests.unit.conftest import make_settings

CHAT = "/v1/chat/completions"
HELLO = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
A = "/admin/v1"


@dataclass
class Admin:
    client: httpx.AsyncClient
    identity: IdentityService
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(A + path, headers=self.auth, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(A + path, json=body, headers=self.auth, **kw)

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.client.patch(A + path, json=body, headers=self.auth)

    async def chat(self, key: str) -> httpx.Response:
        return await self.client.post(CHAT, json=HELLO,
                                      headers={"authorization": f"Bearer {key}"})


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    settings = make_settings(tmp_path, identity={"require_key": True})
    identity = IdentityService(settings)
    app: Gateway = create_app(settings, identity=identity)
    await app.startup()
    plain, _ = await identity.accounts.create_key(None, scope="admin")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    try:
        yield Admin(client, identity, plain)
    finally:
        await client.aclose()
        await app.aclose()


def error(response: httpx.Response, status: int, code: str,
          param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    assert body["error"]["message"]
    assert re.match(r"^req_[0-9a-z]{26}$", response.headers["x-request-id"])
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert re.match(r"^req_[0-9a-z]{26}$", response.headers["x-request-id"])
    return response.json()


async def project(admin: Admin, ref: str = "acme/web") -> None:
    org = ref.split("/")[0]
    if (await admin.get(f"/orgs/{org}")).status_code == 404:
        ok(await admin.post("/orgs", {"name": org}), 201)
    ok(await admin.post("/projects", {"project": ref}), 201)


# -- auth ---------------------------------------------------------------------------------
async def test_refuses_without_an_admin_key(admin: Admin) -> None:
    c = admin.client
    body = error(await c.get(f"{A}/orgs"), 401, "missing_api_key")
    assert body["error"]["type"] == "invalid_request_error"
    error(await c.get(f"{A}/orgs", headers={"authorization": "Basic abc"}), 401,
          "invalid_api_key")
    wrong = "gh-admin-0123456789abcdefghijklmnopqrstuvwxyz"
    body = error(await c.get(f"{A}/orgs", headers={"authorization": f"Bearer {wrong}"}), 401,
                 "invalid_api_key")
    assert wrong not in body["error"]["message"] and "gh-adm***wxyz" in body["error"]["message"]
    # strangers learn nothing about paths or bodies before showing a key
    error(await c.get(f"{A}/nothing-here"), 401, "missing_api_key")
    error(await c.post(f"{A}/orgs", content=b"{not json"), 401, "missing_api_key")


async def test_a_project_key_is_forbidden(admin: Admin) -> None:
    await project(admin)
    key = ok(await admin.post("/keys", {"project": "acme/web"}), 201)["key"]
    body = error(await admin.client.get(f"{A}/orgs", headers={"authorization": f"Bearer {key}"}),
                 403, "insufficient_permissions")
    assert body["error"]["type"] == "permission_error"
    # and the admin key, the other way round, cannot call models
    error(await admin.chat(admin.key), 403, "insufficient_permissions")


async def test_store_down_is_503(admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(token: str) -> None:
        raise StoreUnavailable()

    monkeypatch.setattr(admin.identity.verifier, "verify", down)
    response = await admin.get("/orgs")
    error(response, 503, "identity_unavailable")
    assert response.headers["retry-after"] == "5"


async def test_store_failing_inside_a_route_is_503(admin: Admin,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def down() -> Any:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(admin.identity.accounts, "org_pages", down)
    error(await admin.get("/orgs"), 503, "identity_unavailable")


async def test_the_rules_listing_with_the_store_failing_is_503(
        admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules listing is made in turns now (json_page): the store failing before the first
    piece is still the admin API's 503, not a 500 nor a page cut short."""
    async def down(self: EdgeRecords) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(EdgeRecords, "rules", down)
    error(await admin.get("/edge/rules"), 503, "identity_unavailable")


async def test_listing_thousands_of_keys_and_users_lets_requests_through_and_reads_the_same(
        admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /admin/v1/keys and /users with thousands of rows: read, made into models and dumped
    at once, 10,000 keys held the worker's loop ~100 ms. They are read a page at a time
    (LISTING_ROWS) and serialized a piece at a time, the loop free between — and read exactly
    as the pydantic Page documented in the OpenAPI document."""
    accounts = admin.identity.accounts
    await accounts.create_org("acme", "standard")
    _, project = await accounts.create_project("acme/bot")
    now = time.time()
    async with admin.identity.store.session() as s:  # made straight in the store: fast
        s.add_all(ApiKey(id=f"key_{i:06d}", hash=f"{i:064x}", display=f"gh-…{i}",
                         scope="api", name=f"k é {i}", org_id=project.org_id,
                         project_id=project.id, tier="plus" if i % 5 == 0 else None,
                         created_at=now + i, expires_at=now - 1 if i % 7 == 0 else None,
                         revoked_at=now + 0.5 if i % 11 == 0 else None,
                         last_used_at=now + 0.75 if i % 3 == 0 else None)
                  for i in range(1_200))
        s.add_all(User(id=f"user_{i:06d}", email=f"u{i:05d}@example.com", password_hash="x",
                       org_id=project.org_id if i % 2 else None, tier="free",
                       disabled=i % 13 == 0, created_at=now + i) for i in range(1_100))
        await s.commit()
    async with json_pieces_watched(monkeypatch) as seen:
        keys = ok(await admin.get("/keys", params={"org": "acme"}))
    # 1,200 keys: pages of 500, 500, 200; pieces of PAGE_PIECE in each
    assert len(seen) == 2 * -(-500 // PAGE_PIECE) + -(-200 // PAGE_PIECE)
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))  # between
    infos = await accounts.key_infos("acme")
    assert keys == Page[KeyOut](data=[KeyOut.of(k) for k in infos]).model_dump(mode="json")
    assert [k["id"] for k in keys["data"]] == [f"key_{i:06d}" for i in range(1_200)]
    assert {k["status"] for k in keys["data"]} == {"active", "expired", "revoked"}
    assert keys["data"][0]["tier"] == "plus" and keys["data"][1]["tier"] is None
    assert isinstance(keys["data"][3]["last_used_at"], int)
    assert len(ok(await admin.get("/keys"))["data"]) == 1_201  # the admin key too
    async with json_pieces_watched(monkeypatch) as seen:
        users = ok(await admin.get("/users"))
    assert len(seen) == -(-500 // PAGE_PIECE) * 2 + -(-100 // PAGE_PIECE)
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
    assert users == Page[UserOut](data=[UserOut.of(u, "acme" if int(u.id[5:]) % 2 else None)
                                        for u in await users_in_order(admin)]
                                  ).model_dump(mode="json")
    assert [u["email"] for u in users["data"]][:2] == ["u00000@example.com",
                                                       "u00001@example.com"]


async def test_listing_hundreds_of_orgs_and_projects_comes_in_pieces_and_reads_the_same(
        admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    """Orgs and projects are listed the same way as keys and users (a page of the store at a
    time, serialized in turns), and read exactly as their documented Page."""
    monkeypatch.setattr(accounts_module, "LISTING_ROWS", 100)
    now = time.time()
    async with admin.identity.store.session() as s:
        s.add_all(Org(id=f"org_{i:05d}", name=f"o{i:04d}", tier="standard", created_at=now + i)
                  for i in range(250))
        s.add_all(Project(id=f"proj_{i:05d}", org_id=f"org_{i % 3:05d}", name=f"p{i:04d}",
                          created_at=now + i) for i in range(230))
        await s.commit()
    accounts = admin.identity.accounts
    async with json_pieces_watched(monkeypatch) as seen:
        orgs = ok(await admin.get("/orgs"))
    assert len(seen) == 3 and all(b > a for a, b in itertools.pairwise(seen))
    assert orgs == Page[OrgOut](data=[OrgOut.of(o) for o in await accounts.orgs()]
                                ).model_dump(mode="json")
    assert [o["name"] for o in orgs["data"]] == [f"o{i:04d}" for i in range(250)]
    async with json_pieces_watched(monkeypatch) as seen:
        projects = ok(await admin.get("/projects"))
    assert len(seen) == 3 and all(b > a for a, b in itertools.pairwise(seen))
    assert projects == Page[ProjectOut](data=[ProjectOut.of(o, p) for o, p in
                                              await accounts.projects()]).model_dump(mode="json")
    assert projects["data"][0]["project"] == "o0000/p0000"
    only = ok(await admin.get("/projects", params={"org": "o0001"}))["data"]
    assert [p["name"] for p in only] == [f"p{i:04d}" for i in range(1, 230, 3)]
    error(await admin.get("/projects", params={"org": "nobody"}), 404, "not_found")


async def users_in_order(admin: Admin) -> list[User]:
    async with admin.identity.store.session() as s:
        return list(await s.scalars(select(User).order_by(User.email)))


async def test_a_listing_with_the_store_failing_half_way_is_503_not_a_short_list(
        admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing is read a page at a time; the store failing after the first page is the
    admin API's 503 — never a 200 with the keys read so far."""
    accounts = admin.identity.accounts
    await accounts.create_org("acme", "standard")
    await accounts.create_project("acme/bot")
    for i in range(3):
        await accounts.create_key("acme/bot", name=f"k{i}")
        await accounts.create_user(f"u{i}@example.com", "x", "acme", "free")
    monkeypatch.setattr(accounts_module, "LISTING_ROWS", 2)
    pages = Accounts._pages
    closed: list[bool] = []

    async def failing(self: Accounts, query: Any, make: Any) -> Any:
        reader = pages(self, query, make)
        try:
            yield await anext(reader)
            raise OperationalError("SELECT", {}, Exception("connection lost"))
        finally:
            await reader.aclose()
            closed.append(True)

    monkeypatch.setattr(Accounts, "_pages", failing)
    error(await admin.get("/keys"), 503, "identity_unavailable")
    error(await admin.get("/users"), 503, "identity_unavailable")
    assert closed == [True, True]  # the cursor and its session let go at once
    monkeypatch.setattr(Accounts, "_pages", pages)
    assert len(ok(await admin.get("/keys"))["data"]) == 4


async def test_docs_are_public_and_list_every_path(admin: Admin) -> None:
    schema = ok(await admin.client.get(f"{A}/openapi.json"))
    assert schema["info"]["title"] == "gatehouse admin API"
    assert {f"{A}/orgs", f"{A}/orgs/{{org}}", f"{A}/projects", f"{A}/keys",
            f"{A}/keys/{{key_id}}/revoke", f"{A}/keys/{{key_id}}/rotate", f"{A}/users",
            f"{A}/users/{{email}}", f"{A}/users/{{email}}/logout",
            f"{A}/users/{{email}}/unlock", f"{A}/tiers"} \
        <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["AdminKey"]["scheme"] == "bearer"
    assert "ErrorBody" in schema["components"]["schemas"]
    assert "hash" not in schema["components"]["schemas"]["KeyOut"]["properties"]
    assert "422" not in schema["paths"][f"{A}/orgs"]["post"]["responses"]
    assert "400" in schema["paths"][f"{A}/orgs"]["post"]["responses"]
    page = await admin.client.get(f"{A}/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()


async def test_unknown_path_and_wrong_method(admin: Admin) -> None:
    error(await admin.get("/nothing-here"), 404, "unknown_url")
    error(await admin.get("/orgs/"), 404, "unknown_url")  # no redirects
    response = await admin.client.delete(f"{A}/orgs", headers=admin.auth)
    error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]


async def test_a_body_over_64_kib_is_413_in_the_error_shape(admin: Admin) -> None:
    # Starlette's own limit answered a plain-text "Content Too Large" without the request id
    big = {"name": "acme", "tier": "x" * MAX_BODY_BYTES}
    error(await admin.post("/orgs", big), 413, "request_too_large")
    error(await admin.patch("/orgs/acme", big), 413, "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"name": "acme", "tier": "'
        for _ in range(MAX_BODY_BYTES // 1024):
            yield b"x" * 1024
        yield b'"}'

    error(await admin.client.post(f"{A}/orgs", content=chunks(), headers={
        **admin.auth, "content-type": "application/json"}), 413, "request_too_large")
    # exactly the limit is read and judged; a stranger is told about the key, not the body
    at_limit = b'{"name": "' + b"a" * (MAX_BODY_BYTES - 12) + b'"}'
    assert len(at_limit) == MAX_BODY_BYTES
    error(await admin.client.post(f"{A}/orgs", content=at_limit, headers={
        **admin.auth, "content-type": "application/json"}), 400, "invalid_value", "name")
    error(await admin.client.post(f"{A}/orgs", json=big), 401, "missing_api_key")


# -- orgs and projects --------------------------------------------------------------------
async def test_orgs(admin: Admin) -> None:
    org = ok(await admin.post("/orgs", {"name": "acme"}), 201)
    assert org["name"] == "acme" and org["tier"] == "standard" and org["id"].startswith("org_")
    ok(await admin.post("/orgs", {"name": "beta", "tier": "priority"}), 201)
    assert [o["name"] for o in ok(await admin.get("/orgs"))["data"]] == ["acme", "beta"]
    assert ok(await admin.get("/orgs/acme"))["id"] == org["id"]
    assert ok(await admin.patch("/orgs/acme", {"tier": "priority"}))["tier"] == "priority"
    assert ok(await admin.get("/orgs/acme"))["tier"] == "priority"


@pytest.mark.parametrize("body, code, param", [
    ({}, "missing_required_parameter", "name"),
    ({"name": 5}, "invalid_type", "name"),
    ({"name": "Bad Name"}, "invalid_value", "name"),
    ({"name": "acme", "tier": "free"}, "invalid_value", "tier"),  # a web tier
    ({"name": "acme", "tier": "gold"}, "invalid_value", "tier"),
    ({"name": "acme", "teir": "priority"}, "invalid_value", "teir"),
])
async def test_org_refusals(admin: Admin, body: dict[str, Any], code: str,
                            param: str | None) -> None:
    error(await admin.post("/orgs", body), 400, code, param)


async def test_bodies_that_are_not_json_objects(admin: Admin) -> None:
    for content in (b"{not json", b"[1, 2]", b""):
        response = await admin.client.post(f"{A}/orgs", content=content, headers={
            **admin.auth, "content-type": "application/json"})
        error(response, 400, "invalid_json")
    # a form post (curl -d without a Content-Type) is not JSON either
    response = await admin.client.post(f"{A}/orgs", data={"name": "acme"}, headers=admin.auth)
    error(response, 400, "invalid_json")


async def test_org_conflict_and_not_found(admin: Admin) -> None:
    ok(await admin.post("/orgs", {"name": "acme"}), 201)
    error(await admin.post("/orgs", {"name": "acme"}), 409, "conflict")
    error(await admin.get("/orgs/nope"), 404, "not_found")
    error(await admin.patch("/orgs/nope", {"tier": "standard"}), 404, "not_found")
    error(await admin.patch("/orgs/acme", {"tier": "plus"}), 400, "invalid_value", "tier")


async def test_projects(admin: Admin) -> None:
    await project(admin, "acme/web")
    await project(admin, "acme/api")
    await project(admin, "beta/app")
    listed = ok(await admin.get("/projects", params={"org": "acme"}))["data"]
    assert [p["project"] for p in listed] == ["acme/api", "acme/web"]
    assert listed[0]["org"] == "acme" and listed[0]["name"] == "api"
    assert len(ok(await admin.get("/projects"))["data"]) == 3
    error(await admin.post("/projects", {"project": "acme/web"}), 409, "conflict")
    error(await admin.post("/projects", {"project": "acme/Web App"}), 400, "invalid_value",
          "project")
    error(await admin.post("/projects", {"project": "nope/web"}), 404, "not_found")
    error(await admin.post("/projects", {"project": "acme"}), 400, "invalid_value", "project")
    error(await admin.post("/projects", {"org": "acme", "name": "x"}), 400,
          "missing_required_parameter", "project")
    error(await admin.get("/projects", params={"org": "nope"}), 404, "not_found")


# -- keys ---------------------------------------------------------------------------------
async def test_key_lifecycle_on_the_gateway(admin: Admin) -> None:
    await project(admin)
    made = await admin.post("/keys", {"project": "acme/web", "name": "ci"})
    created = ok(made, 201)
    assert made.headers["cache-control"] == "no-store"
    key = created["key"]
    assert created["status"] == "active" and created["project"] == "acme/web"
    assert created["display"] != key and created["name"] == "ci"
    assert ok(await admin.chat(key))["choices"]

    listed = ok(await admin.get("/keys", params={"project": "acme/web"}))["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "hash" not in listed[0]
    assert key not in (await admin.get("/keys")).text

    revoked = ok(await admin.post(f"/keys/{created['id']}/revoke"))
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    assert revoked["project"] == "acme/web"
    error(await admin.chat(key), 401, "invalid_api_key")
    again = ok(await admin.post(f"/keys/{created['id']}/revoke"))
    assert again["revoked_at"] == revoked["revoked_at"]


async def test_key_filters_and_admin_keys(admin: Admin) -> None:
    await project(admin, "acme/web")
    await project(admin, "beta/app")
    ok(await admin.post("/keys", {"project": "acme/web", "tier": "priority"}), 201)
    ok(await admin.post("/keys", {"project": "beta/app"}), 201)
    second = ok(await admin.post("/keys", {"scope": "admin", "name": "ops"}), 201)
    assert second["scope"] == "admin" and second["project"] is None
    assert len(ok(await admin.get("/keys", params={"org": "acme"}))["data"]) == 1
    assert len(ok(await admin.get("/keys", params={"scope": "admin"}))["data"]) == 2
    assert len(ok(await admin.get("/keys"))["data"]) == 4
    # the new admin key works here
    response = await admin.client.get(f"{A}/tiers",
                                      headers={"authorization": f"Bearer {second['key']}"})
    ok(response)


@pytest.mark.parametrize("body, code, param", [
    ({}, "missing_required_parameter", "project"),
    ({"scope": "admin", "project": "acme/web"}, "invalid_value", "project"),
    ({"project": "acme/web", "tier": "free"}, "invalid_value", "tier"),
    ({"project": "acme/web", "scope": "root"}, "invalid_value", "scope"),
    ({"project": "acme/web", "expires_in_seconds": 0}, "invalid_value", "expires_in_seconds"),
    ({"project": "acme/web", "expires_in_seconds": "soon"}, "invalid_type",
     "expires_in_seconds"),
])
async def test_key_refusals(admin: Admin, body: dict[str, Any], code: str,
                            param: str | None) -> None:
    await project(admin)
    error(await admin.post("/keys", body), 400, code, param)


async def test_key_not_found(admin: Admin) -> None:
    error(await admin.post("/keys", {"project": "acme/nope"}), 404, "not_found")
    error(await admin.post("/keys/key_nope/revoke"), 404, "not_found")
    error(await admin.post("/keys/key_nope/rotate"), 404, "not_found")
    error(await admin.get("/keys", params={"scope": "root"}), 400, "invalid_value", "scope")
    error(await admin.get("/keys", params={"org": "acme", "project": "beta/x"}), 400,
          "invalid_value", "project")


async def test_listing_filters_refuse_what_they_cannot_name(admin: Admin) -> None:
    """The listings' filters, as a stranger sends them: an org or project that does not
    exist is a 404 before any row is read; an oversized, control-character or wrongly shaped
    one is a 400 naming the parameter, its value not echoed whole — never a 500."""
    await project(admin)
    error(await admin.get("/keys", params={"org": "nope"}), 404, "not_found")
    error(await admin.get("/keys", params={"project": "acme/nope"}), 404, "not_found")
    error(await admin.get("/projects", params={"org": "nope"}), 404, "not_found")
    huge = "a" * 5_000
    for path, param, value in (("/keys", "org", huge), ("/keys", "project", f"acme/{huge}"),
                               ("/keys", "project", "acme/web\x00"), ("/keys", "org", "ACME"),
                               ("/keys", "project", "acme"), ("/projects", "org", huge),
                               ("/projects", "org", "a\nb")):
        body = error(await admin.get(path, params={param: value}), 400, "invalid_value", param)
        assert huge not in body["error"]["message"]
    listed = ok(await admin.get("/keys", params={"project": "acme/web"}))
    assert listed == {"object": "list", "data": []}


async def test_key_expiry_is_reported(admin: Admin) -> None:
    await project(admin)
    made = ok(await admin.post("/keys", {"project": "acme/web", "expires_in_seconds": 3600}),
              201)
    assert made["expires_at"] - made["created_at"] in (3599, 3600, 3601)
    assert made["status"] == "active"


async def test_rotate_without_grace(admin: Admin) -> None:
    await project(admin)
    old = ok(await admin.post("/keys", {"project": "acme/web", "tier": "priority"}), 201)
    rotated = ok(await admin.post(f"/keys/{old['id']}/rotate"), 201)
    assert rotated["id"] != old["id"] and rotated["key"] != old["key"]
    assert rotated["tier"] == "priority" and rotated["project"] == "acme/web"
    assert rotated["replaced"]["id"] == old["id"]
    assert rotated["replaced"]["status"] == "revoked"
    error(await admin.chat(old["key"]), 401, "invalid_api_key")
    ok(await admin.chat(rotated["key"]))
    error(await admin.post(f"/keys/{old['id']}/rotate"), 400, "invalid_value")


async def test_rotate_with_grace(admin: Admin) -> None:
    await project(admin)
    old = ok(await admin.post("/keys", {"project": "acme/web"}), 201)
    assert ok(await admin.chat(old["key"]))  # cached by the verifier
    rotated = ok(await admin.post(f"/keys/{old['id']}/rotate", {"grace_seconds": 3600}), 201)
    replaced = rotated["replaced"]
    assert replaced["status"] == "active" and replaced["revoked_at"] is None
    assert replaced["expires_at"] >= rotated["created_at"] + 3599
    ok(await admin.chat(old["key"]))
    ok(await admin.chat(rotated["key"]))
    error(await admin.post(f"/keys/{old['id']}/rotate", {"grace_seconds": -1}), 400,
          "invalid_value", "grace_seconds")


# -- users --------------------------------------------------------------------------------
async def test_users(admin: Admin) -> None:
    ok(await admin.post("/orgs", {"name": "acme"}), 201)
    made = await admin.post("/users", {"email": "Ada@Example.com", "password": "correct horse",
                                       "org": "acme", "tier": "plus"})
    user = ok(made, 201)
    assert user["email"] == "ada@example.com" and user["org"] == "acme"
    assert user["tier"] == "plus" and user["disabled"] is False
    assert "correct horse" not in made.text and "password" not in user
    ok(await admin.post("/users", {"email": "bob@example.com", "password": "0123456789"}), 201)
    listed = ok(await admin.get("/users"))["data"]
    assert [(u["email"], u["org"]) for u in listed] == [("ada@example.com", "acme"),
                                                        ("bob@example.com", None)]
    assert "password" not in (await admin.get("/users")).text

    sessions = admin.identity.sessions
    await sessions.create(user["id"])
    await sessions.create(user["id"])
    patched = ok(await admin.patch("/users/ada@example.com", {"tier": "pro"}))
    assert patched["tier"] == "pro" and patched["sessions_ended"] == 0
    assert patched["org"] == "acme"
    out = ok(await admin.post("/users/ada@example.com/logout"))
    assert out == {"email": "ada@example.com", "sessions_ended": 2}
    sid, _ = await sessions.create(user["id"])
    disabled = ok(await admin.patch("/users/ada@example.com", {"disabled": True}))
    assert disabled["disabled"] is True and disabled["sessions_ended"] == 1
    assert await sessions.load(sid) is None
    await sessions.create(user["id"])
    changed = ok(await admin.patch("/users/ada@example.com", {"password": "another horse"}))
    assert changed["sessions_ended"] == 1 and "another horse" not in str(changed)

    throttle = admin.identity.throttle
    for _ in range(8):  # past the free failures: the email is locked
        await throttle.attempt("ada@example.com", "10.0.0.1")
    assert not (await throttle.attempt("ada@example.com", "10.0.0.2")).allowed
    assert ok(await admin.post("/users/ada@example.com/unlock")) == \
        {"email": "ada@example.com", "unlocked": True}
    assert (await throttle.attempt("ada@example.com", "10.0.0.2")).allowed
    # found by schemathesis: a user with "/" in the email could be created, then not reached
    # at /users/{email} (the server decodes %2F): refused at creation instead
    error(await admin.post("/users", {"email": "a/b@example.com", "password": "0123456789"}),
          400, "invalid_value", "email")
    assert ok(await admin.post("/users/nobody@example.com/unlock")) == \
        {"email": "nobody@example.com", "unlocked": False}


@pytest.mark.parametrize("body, code, param", [
    ({"email": "a@b.c", "password": "short"}, "invalid_value", "password"),
    ({"email": "a@b.c", "password": "0123456789", "tier": "standard"}, "invalid_value", "tier"),
    ({"email": "not-an-email", "password": "0123456789"}, "invalid_value", "email"),
    ({"password": "0123456789"}, "missing_required_parameter", "email"),
    ({"email": "a@b.c", "password": "0123456789", "admin": True}, "invalid_value", "admin"),
])
async def test_user_refusals(admin: Admin, body: dict[str, Any], code: str,
                             param: str | None) -> None:
    error(await admin.post("/users", body), 400, code, param)


async def test_user_conflict_and_not_found(admin: Admin) -> None:
    body = {"email": "ada@example.com", "password": "0123456789"}
    ok(await admin.post("/users", body), 201)
    error(await admin.post("/users", body), 409, "conflict")
    error(await admin.post("/users", {**body, "email": "x@y.z", "org": "nope"}), 404,
          "not_found")
    error(await admin.patch("/users/nobody@example.com", {"tier": "pro"}), 404, "not_found")
    error(await admin.post("/users/nobody@example.com/logout"), 404, "not_found")
    error(await admin.patch("/users/ada@example.com", {"tier": "priority"}), 400,
          "invalid_value", "tier")
    error(await admin.patch("/users/ada@example.com", {"disabled": "maybe"}), 400,
          "invalid_type", "disabled")
    error(await admin.patch("/users/ada@example.com", {"password": "short"}), 400,
          "invalid_value", "password")


# -- tiers --------------------------------------------------------------------------------
async def test_tiers(admin: Admin) -> None:
    tiers = {t["name"]: t for t in ok(await admin.get("/tiers"))["data"]}
    assert tiers["standard"]["kind"] == "api" and tiers["standard"]["may_request"] == ["flex"]
    assert tiers["free"]["kind"] == "web" and tiers["free"]["description"]
