"""The edge as a pipeline stage (DESIGN.md: telemetry → edge → identity → …)."""

from __future__ import annotations

from gatehouse.context import Outcome, RequestContext
from gatehouse.edge.screen import Edge
from gatehouse.pipeline import Answered


class EdgeStage:
    name = "edge"

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def enter(self, ctx: RequestContext) -> None:
        visitor = self.edge.visitor(ctx.method, ctx.path, ctx.headers,
                                    ctx.client[0] if ctx.client else None)
        ctx.client_ip = visitor.ip
        ctx.notes["visitor"] = visitor
        verdict = await self.edge.screen(visitor)
        try:
            if verdict.error is not None:
                ctx.edge_verdict, ctx.ray_id = "deny", verdict.error.ray_id
                raise verdict.error
            if verdict.reply is not None:
                ctx.edge_verdict = "challenge"
                ctx.ray_id = verdict.reply.headers.get("gatehouse-ray")
                raise Answered(verdict.reply)
            ctx.edge_verdict = "pass"
        finally:
            # the raised error's traceback holds this frame: without this, error → traceback →
            # frame → verdict → error is a cycle per denial, left for the garbage collector
            del verdict

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        # 401s (bad keys, expired sessions) count towards a ban: guessing keys is abuse
        if outcome.status == 401:
            self.edge.offense(ctx.notes["visitor"], "unauthorized")
