"""``GET /v1/health``: the health view (telemetry/health.py) of the caller's own org — its key's
org, or its session's. An org or project filter outside that org answers the same 404 as one
that does not exist."""

from __future__ import annotations

import orjson

from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import MissingApiKey, PermissionDenied
from gatehouse.identity.principal import Principal
from gatehouse.store.db import Store
from gatehouse.telemetry.compaction import Retention
from gatehouse.telemetry.health import parse_query_string, read_health

PATH = "/v1/health"


class HealthStage:
    name = "health"

    def __init__(self, store: Store, retention: Retention) -> None:
        self.store = store
        self.retention = retention

    async def enter(self, ctx: RequestContext) -> None:
        query = parse_query_string(ctx.query)
        who: Principal | None = ctx.principal
        if who is None or who.kind == "anonymous":
            raise MissingApiKey("Reading health needs an API key (or session) of your "
                                "organization.")
        if who.org_id is None:
            raise PermissionDenied("Health is counted per organization, and this caller "
                                   "belongs to none.")
        view = await read_health(self.store, query, own_org=who.org_id,
                                 retention=self.retention)
        ctx.reply = Reply(200, {"content-type": "application/json",
                                "cache-control": "no-store"}, orjson.dumps(view))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None
