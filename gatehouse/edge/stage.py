"""The edge as pipeline stages (DESIGN.md: telemetry → edge → identity → …): the screen
before identity, and the human check of anonymous API callers after it."""

from __future__ import annotations

from gatehouse.context import Outcome, RequestContext
from gatehouse.edge.screen import Edge, Verdict
from gatehouse.pipeline import Answered


def enforce(verdict: Verdict, ctx: RequestContext) -> None:
    """Raise the verdict's refusal or ready answer, if it has one — noted on ``ctx`` (with its
    Ray ID) for the request's record."""
    try:
        if verdict.error is not None:
            ctx.edge_verdict, ctx.ray_id = "deny", verdict.error.ray_id
            raise verdict.error
        if verdict.reply is not None:
            ctx.edge_verdict = "challenge"
            ctx.ray_id = verdict.reply.headers.get("gatehouse-ray")
            raise Answered(verdict.reply)
        if ctx.edge_verdict is None:
            ctx.edge_verdict = "pass"
    finally:
        # the raised error's traceback holds this frame: without this, error → traceback →
        # frame → verdict → error is a cycle per denial, left for the garbage collector
        del verdict


class EdgeStage:
    name = "edge"

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def enter(self, ctx: RequestContext) -> None:
        visitor = self.edge.visitor(ctx.method, ctx.path, ctx.headers,
                                    ctx.client[0] if ctx.client else None)
        visitor.request_id = ctx.request_id
        ctx.client_ip = visitor.ip
        ctx.notes["visitor"] = visitor
        enforce(await self.edge.screen(visitor), ctx)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        # 401s (bad keys, expired sessions) count towards a ban: guessing keys is abuse
        if outcome.status == 401:
            self.edge.offense(ctx.notes["visitor"], "unauthorized")


class AnonymousCheckStage:
    """After identity: an API caller that identity admitted as nobody in particular (open
    mode) meets challenge rules as a web visitor would. A key that verified, or a session,
    is exempt — the exemption is decided here, on identity's own verdict, so no key is
    verified twice."""

    name = "edge_anonymous"

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def enter(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        if principal is not None and principal.kind == "anonymous":
            enforce(await self.edge.screen_anonymous(ctx.notes["visitor"]), ctx)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None
