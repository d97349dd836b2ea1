"""``GET /admin/v1/requests/{id}``: any request, by its request id, client request id or
Ray ID — everything its record holds (gatehouse/telemetry/record.py, docs/telemetry.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gatehouse.admin.models import errors as responses
from gatehouse.errors import NotFound
from gatehouse.identity.service import IdentityService
from gatehouse.store.requests import RequestRows
from gatehouse.telemetry.lookup import check_id, operator_view
from gatehouse.telemetry.requestlog import RequestLog


def requests_router(identity: IdentityService, log: RequestLog | None = None) -> APIRouter:
    """``log``: the running gateway's, so records not written yet are found too."""
    router = APIRouter(prefix="/requests", tags=["requests"])
    rows = RequestRows(identity.store)
    days = identity.settings.telemetry.request_log_days

    @router.get("/{request_id:path}", summary="Look up a request",
                responses=responses(400, 404))
    async def find_request(request_id: str) -> dict[str, Any]:
        """The newest request whose request id, client request id or Ray ID this is: what
        each stage decided, the status and error, tokens and timings (docs/telemetry.md).
        ``other_matches`` lists the request ids of older requests with the same id (a
        client request id reused by retries)."""
        any_id = check_id(request_id)
        found = await (log.find(any_id) if log is not None else rows.find(any_id))
        if not found:
            raise NotFound(f"No request `{any_id}` in the request log (records reach it "
                           f"within a second or two and are kept {days:g} days; successes "
                           "above the sampling rate are kept 1 in 10).", param="id")
        return operator_view(found)

    return router
