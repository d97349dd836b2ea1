"""Looking a request up by any of its ids: request id (``req_…``), client request id
(``X-Client-Request-Id``) or Ray ID.

Two views of one record. Operators (admin API, CLI) see all of it. A customer
(``GET /v1/requests/{id}``, by API key or session) sees only their own org's records, and of
those nothing private: not the error's cause (it may name internal addresses) nor the client
address. Another org's id and an unknown id get the same 404, word for word."""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import InvalidRequest, MissingApiKey, NotFound
from gatehouse.identity.principal import Principal
from gatehouse.telemetry.ids import CLIENT_ID_MAX
from gatehouse.telemetry.record import RequestRecord
from gatehouse.telemetry.requestlog import RequestLog

PREFIX = "/v1/requests/"
PRIVATE = frozenset({"error_cause", "client"})
BAD_ID = ("Look a request up by its request id (x-request-id, req_…), the X-Client-Request-Id "
          "you sent, or a Ray ID: 1 to 512 printable ASCII characters.")


def check_id(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > CLIENT_ID_MAX or not value.isascii() or not value.isprintable():
        raise InvalidRequest(BAD_ID, param="id")
    return value


def operator_view(found: list[RequestRecord]) -> dict[str, Any]:
    """The newest match, whole, and the request ids of any others (a client request id
    reused by retries matches each attempt)."""
    return {"object": "request", **found[0].as_dict(),
            "other_matches": [r.request_id for r in found[1:]]}


def customer_view(found: list[RequestRecord]) -> dict[str, Any]:
    return {k: v for k, v in operator_view(found).items() if k not in PRIVATE}


def not_found(any_id: str) -> NotFound:
    return NotFound(f"No request `{any_id}` was found in your organization's request log.",
                    param="id")


class RequestLookupStage:
    """``GET /v1/requests/{id}``: a customer's own request, by any of its ids."""

    name = "requests"

    def __init__(self, log: RequestLog) -> None:
        self.log = log

    async def enter(self, ctx: RequestContext) -> None:
        any_id = check_id(ctx.path[len(PREFIX):])  # decoded once already, by the server
        who: Principal | None = ctx.principal
        if who is None or who.kind == "anonymous":
            raise MissingApiKey("Looking up a request needs the API key (or session) of its "
                                "organization.")
        found: list[RequestRecord] = []
        if who.org_id is not None:
            found = await self.log.find(any_id, org=who.org_id)
        elif who.user_id is not None:
            found = await self.log.find(any_id, user=who.user_id)
        if not found:
            raise not_found(any_id)
        ctx.reply = Reply(200, {"content-type": "application/json"},
                          orjson.dumps(customer_view(found)))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        pass
