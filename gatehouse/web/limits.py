"""A signed-in person's limits, as ``GET /v1/usage`` reports them (the quota stage's own
windows): for the account page, and for when a refused chat message may be sent again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from gatehouse.context import RequestContext
from gatehouse.identity.principal import Principal
from gatehouse.quota.usage import UsageStage
from gatehouse.telemetry.ids import new_request_id


async def limits_of(usage: UsageStage, principal: Principal) -> list[dict[str, Any]]:
    """The ``limits`` of ``GET /v1/usage`` for ``principal``."""
    ctx = RequestContext(new_request_id(), "GET", "/v1/usage", {}, None)
    ctx.principal = principal
    await usage.enter(ctx)
    assert ctx.reply is not None
    limits: list[dict[str, Any]] = orjson.loads(ctx.reply.body)["limits"]
    return limits


def exhausted_until(limits: list[dict[str, Any]]) -> float | None:
    """When the last of the used-up limits resets (Unix seconds), or None."""
    ends = [datetime.fromisoformat(entry["resets_at"]).timestamp()
            for entry in limits if entry.get("resets_at") and entry.get("remaining", 1) <= 0]
    return max(ends) if ends else None
