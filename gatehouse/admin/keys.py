"""/admin/v1/keys: list, create (the key is in that answer and nowhere else), revoke, rotate.

A revoked or rotated key is announced through the state layer at once, so every replica drops
it from its cache: the next request with it is a 401 everywhere."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from gatehouse.admin.errors import about
from gatehouse.admin.models import (
    KeyIn,
    KeyOut,
    NewKey,
    Page,
    Rotated,
    RotateIn,
    json_pages,
)
from gatehouse.admin.models import errors as responses
from gatehouse.admin.tiers import check_tier
from gatehouse.errors import InvalidRequest
from gatehouse.identity.service import IdentityService
from gatehouse.store.accounts import NAME_PATTERN, PROJECT_PATTERN
from gatehouse.store.tables import ApiKey


def keys_router(identity: IdentityService) -> APIRouter:
    router = APIRouter(tags=["keys"])
    accounts = identity.accounts

    async def project_of(row: ApiKey) -> str | None:
        record = await accounts.find_key(row.hash)
        if record is None or record.project is None:
            return None
        return f"{record.org}/{record.project}"

    def new_key(plain: str, row: ApiKey, project: str | None, response: Response) -> NewKey:
        response.headers["cache-control"] = "no-store"
        return NewKey(key=plain, **KeyOut.of_row(row, project).model_dump())

    @router.get("/keys", summary="List keys", responses=responses(404),
                response_model=Page[KeyOut])
    async def list_keys(
        org: Annotated[str | None, Query(pattern=NAME_PATTERN,
                                         description="Only this org's keys.")] = None,
        project: Annotated[str | None, Query(pattern=PROJECT_PATTERN,
                                             description="Only this project's keys "
                                             "(ORG/PROJECT).")] = None,
        scope: Annotated[Literal["api", "admin"] | None, Query()] = None,
    ) -> Response:
        """Never the key itself nor its hash: `display` is enough to recognise one."""
        if org is not None and project is not None and not project.startswith(f"{org}/"):
            raise InvalidRequest(f"Project {project!r} is not in org {org!r}.",
                                 param="project")
        return await json_pages(await accounts.key_info_pages(org, project, scope),
                                KeyOut.shaped)

    @router.post("/keys", status_code=201, summary="Create a key", responses=responses(404))
    async def create_key(body: KeyIn, response: Response) -> NewKey:
        """The answer holds the key in `key`: the only time it is shown. Store it now."""
        if body.scope == "api" and body.project is None:
            raise InvalidRequest("An api key belongs to a project: send project as "
                                 "ORG/PROJECT (or scope admin for an admin key).",
                                 param="project", code="missing_required_parameter")
        if body.scope == "admin" and body.project is not None:
            raise InvalidRequest("An admin key belongs to no project; leave project out.",
                                 param="project")
        tier = None if body.tier is None else check_tier(identity.settings, body.tier, "api")
        expires_at = None if body.expires_in_seconds is None else \
            time.time() + body.expires_in_seconds
        with about("project"):
            plain, row = await accounts.create_key(body.project, scope=body.scope, tier=tier,
                                                   name=body.name, expires_at=expires_at)
        return new_key(plain, row, body.project, response)

    @router.post("/keys/{key_id}/revoke", summary="Revoke a key", responses=responses(404))
    async def revoke_key(key_id: str) -> KeyOut:
        """Stops the key on every replica at once. Revoking a revoked key changes nothing."""
        row = await accounts.key(key_id)
        if row.revoked_at is None:
            row = await accounts.revoke_key(key_id)
            await identity.key_changed(row.hash)
        return KeyOut.of_row(row, await project_of(row))

    @router.post("/keys/{key_id}/rotate", status_code=201, summary="Rotate a key",
                 responses=responses(404))
    async def rotate_key(key_id: str, response: Response,
                         body: RotateIn | None = None) -> Rotated:
        """A new key with the same project, tier, name and expiry; the old one is revoked
        now, or keeps working for `grace_seconds`. The new key is shown once, in `key`."""
        grace = body.grace_seconds if body is not None else 0
        plain, new, old = await accounts.rotate_key(key_id, float(grace))
        await identity.key_changed(old.hash)
        project = await project_of(new)
        fresh = new_key(plain, new, project, response)
        return Rotated(**fresh.model_dump(), replaced=KeyOut.of_row(old, project))

    return router
