"""``GET /admin/v1/organization/usage/completions``: OpenAI's usage API shape over every org
(telemetry/usage_api.py); the customer's own org is ``/v1/organization/usage/completions``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gatehouse.admin.models import errors as responses
from gatehouse.identity.service import IdentityService
from gatehouse.telemetry.compaction import retention
from gatehouse.telemetry.usage_api import parse_usage, read_usage


def usage_router(identity: IdentityService) -> APIRouter:
    router = APIRouter(tags=["usage"])
    kept = retention(identity.settings.telemetry)

    @router.get("/organization/usage/completions", summary="Completions usage",
                responses=responses(400, 404))
    async def get_usage(
        request: Request,
        start_time: Annotated[int, Query(description="Unix seconds, inclusive.")],
        end_time: Annotated[int | None, Query(description="Unix seconds, exclusive.")] = None,
        bucket_width: Annotated[str, Query(description="1m, 1h or 1d.")] = "1d",
        group_by: Annotated[list[str] | None, Query(
            description="project_id, user_id, api_key_id, model, batch.")] = None,
        project_ids: Annotated[list[str] | None, Query()] = None,
        user_ids: Annotated[list[str] | None, Query()] = None,
        api_key_ids: Annotated[list[str] | None, Query()] = None,
        models: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int | None, Query(description="Buckets per page.")] = None,
        page: Annotated[str | None, Query(description="`next_page` of the last page.")] = None,
    ) -> dict[str, Any]:
        """Tokens and model requests per bucket, in the shape of OpenAI's usage API, over
        every org (filter by `project_ids`). Per API key or user only with
        `bucket_width=1d`; anything the stored usage cannot answer exactly is a 400 naming
        the parameter."""
        query = parse_usage(request.scope.get("query_string", b""))
        return await read_usage(identity.store, query, retention=kept)

    return router
