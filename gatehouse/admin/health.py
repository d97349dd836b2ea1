"""``GET /admin/v1/health``: the health view (telemetry/health.py, docs/telemetry.md) of any
filter — model, tier, org, project, component — over a window, from the minute rollups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gatehouse.admin.models import errors as responses
from gatehouse.identity.service import IdentityService
from gatehouse.telemetry.compaction import retention
from gatehouse.telemetry.health import WINDOWS, parse_query_string, read_health


def health_router(identity: IdentityService) -> APIRouter:
    router = APIRouter(tags=["health"])
    kept = retention(identity.settings.telemetry)

    @router.get("/health", summary="Traffic health", responses=responses(400, 404))
    async def get_health(
        request: Request,
        model: Annotated[str | None, Query(description="Only this model.")] = None,
        tier: Annotated[str | None, Query(description="Only this tier.")] = None,
        org: Annotated[str | None, Query(description="Only this org (name or id).")] = None,
        project: Annotated[str | None, Query(
            description="Only this project: `org/project`, its id, or its name when one "
                        "org has it.")] = None,
        component: Annotated[str | None, Query(
            description="Only this component: api, web, login, admin.")] = None,
        window: Annotated[str, Query(description=f"One of {', '.join(WINDOWS)}.")] = "1h",
    ) -> dict[str, Any]:
        """Requests, errors by class (counts and shares), latency and time-to-first-byte
        p50/p95/p99, admission wait and tokens over the window, per model, and as a series
        of 5–90 points — from the minute rollups. Any other parameter (`key`, `endpoint`, …)
        is refused with a 400 that names it: rollups are not counted by those."""
        query = parse_query_string(request.scope.get("query_string", b""))
        return await read_health(identity.store, query, retention=kept)

    return router
