"""Limit overrides and usage history over HTTP: /admin/v1/limits, /admin/v1/usage."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gatehouse.admin.models import Body, Page
from gatehouse.admin.models import errors as responses
from gatehouse.errors import InvalidRequest
from gatehouse.identity.service import IdentityService
from gatehouse.quota.overrides import Overrides, announce
from gatehouse.quota.policy import LIMIT_MAX
from gatehouse.store.accounts import NAME_PATTERN
from gatehouse.store.usage import GROUPS, UsageBook

Scope = Literal["org", "project", "key", "user"]


class LimitIn(Body):
    scope: Scope
    name: str = Field(description="acme | acme/bot | key_… | ann@example.com")
    field: str = Field(description="requests_per_minute, tokens_per_minute, "
                                   "response_tokens_per_hour, tokens_per_day, "
                                   "tokens_per_month or concurrent_requests")
    value: int | None = Field(ge=1, le=LIMIT_MAX, description="the limit; null for unlimited")


class LimitOut(BaseModel):
    scope: str
    scope_id: str
    field: str
    value: int | None


class UsageRow(BaseModel):
    project: str | None = None
    key: str | None = None
    user: str | None = None
    model: str | None = None
    day: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    gateway_counted_requests: int = Field(
        0, description="of the requests, those whose tokens the gateway counted (the backend "
                       "reported none, or the stream ended before it did)")


def quota_router(identity: IdentityService) -> APIRouter:
    router = APIRouter(tags=["quota"])
    overrides = Overrides(identity.store)

    @router.get("/limits", summary="List limit overrides")
    async def list_limits() -> Page[LimitOut]:
        """Every override: an org's, project's, key's or user's own value for one limit,
        replacing its tier's (null: unlimited)."""
        table = await overrides.load()
        return Page(data=[LimitOut(scope=s, scope_id=i, field=f, value=v)
                          for (s, i), values in sorted(table.items())
                          for f, v in sorted(values.items())])

    @router.put("/limits", summary="Set a limit override", responses=responses(400, 404))
    async def set_limit(body: LimitIn) -> LimitOut:
        """Give one scope its own value for a limit; every replica applies it within
        seconds (at once with Redis state)."""
        scope_id = await identity.accounts.scope_id(body.scope, body.name)
        try:
            await overrides.set(body.scope, scope_id, body.field, body.value)
        except ValueError as exc:
            msg = str(exc)
            param = "field" if "unknown limit" in msg else \
                "value" if "whole number" in msg else "scope"
            raise InvalidRequest(msg, param=param) from None
        await announce(identity.state)
        return LimitOut(scope=body.scope, scope_id=scope_id, field=body.field, value=body.value)

    @router.delete("/limits", summary="Clear limit overrides", responses=responses(404))
    async def clear_limits(scope: Scope, name: str, field: str | None = None) -> dict[str, int]:
        """Drop one scope's override of one limit (or all of them): the tier applies again."""
        scope_id = await identity.accounts.scope_id(scope, name)
        cleared = await overrides.clear(scope, scope_id, field)
        await announce(identity.state)
        return {"cleared": cleared}

    @router.get("/usage", summary="Usage history of an org", responses=responses(400, 404))
    async def usage(org: Annotated[str, Query(pattern=NAME_PATTERN)],
                    by: Annotated[str, Query(description=f"comma list of {', '.join(GROUPS)}")]
                    = "",
                    since_days: Annotated[float, Query(gt=0, le=3660)] = 7) -> Page[UsageRow]:
        """Requests and tokens an org used since ``since_days`` ago, grouped as asked."""
        groups = [g.strip() for g in by.split(",") if g.strip()]
        for g in groups:
            if g not in GROUPS:
                raise InvalidRequest(f"by: {g!r} is not one of {', '.join(GROUPS)}", param="by")
        the_org = await identity.accounts.org(org)
        rows = await UsageBook(identity.store).report(the_org.id, groups,
                                                      time.time() - since_days * 86400)
        return Page(data=[UsageRow.model_validate(r) for r in rows])

    return router
