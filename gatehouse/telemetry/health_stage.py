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


def own_org(ctx: RequestContext, what: str) -> str:
    """The caller's org id: what an org-scoped view (health, usage) is limited to."""
    who: Principal | None = ctx.principal
    if who is None or who.kind == "anonymous":
        raise MissingApiKey(f"Reading {what.lower()} needs an API key (or session) of your "
                            "organization.")
    if who.org_id is None:
        raise PermissionDenied(f"{what} is counted per organization, and this caller "
                               "belongs to none.")
    return who.org_id


def json_reply(view: object) -> Reply:
    return Reply(200, {"content-type": "application/json", "cache-control": "no-store"},
                 orjson.dumps(view))


class HealthStage:
    name = "health"

    def __init__(self, store: Store, retention: Retention) -> None:
        self.store = store
        self.retention = retention

    async def enter(self, ctx: RequestContext) -> None:
        query = parse_query_string(ctx.query)
        view = await read_health(self.store, query, own_org=own_org(ctx, "Health"),
                                 retention=self.retention)
        ctx.reply = json_reply(view)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None
