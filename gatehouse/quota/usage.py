"""``GET /v1/usage``: the caller's limits — used, remaining and when each resets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import QuotaUnavailable
from gatehouse.quota.limiter import LimiterError
from gatehouse.quota.policy import LIMITS, Estimate
from gatehouse.quota.stage import QuotaStage
from gatehouse.quota.windows import format_reset


class UsageStage:
    name = "usage"

    def __init__(self, quota: QuotaStage) -> None:
        self.quota = quota

    async def enter(self, ctx: RequestContext) -> None:
        now = self.quota.clock()
        plan = self.quota.plan(ctx, Estimate(0, 0), now)
        try:
            used = await self.quota.shared.usage([c.ask for c in plan], now)
        except LimiterError:
            raise QuotaUnavailable("Usage cannot be read right now.", retry_after=2) from None
        limits: list[dict[str, Any]] = []
        for charge, value in zip(plan, used, strict=True):
            window, unit, label, budget = LIMITS[charge.field]
            entry: dict[str, Any] = {
                "scope": charge.scope, "limit_name": charge.field, "description": label,
                "unit": unit, "window": window or None, "budget": budget,
                "limit": charge.ask.limit, "used": value,
                "remaining": max(0, charge.ask.limit - value)}
            if window:
                entry["resets_at"] = datetime.fromtimestamp(
                    charge.window_end, UTC).isoformat().replace("+00:00", "Z")
                entry["resets_in"] = format_reset(charge.window_end - now)
            limits.append(entry)
        principal = ctx.principal
        # who is asking, for support tickets (gatehouse doctor's report): names, no secrets
        body = {"object": "usage", "tier": principal.tier if principal else None,
                "org": getattr(principal, "org", None),
                "project": getattr(principal, "project", None), "limits": limits}
        ctx.reply = Reply(200, {"content-type": "application/json",
                                "cache-control": "no-store"}, orjson.dumps(body))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None
