"""The telemetry stage: first in, last out, so it sees every request's whole life."""

from __future__ import annotations

from gatehouse.context import Outcome, RequestContext
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.record import AccessLog, RequestRecord


class TelemetryStage:
    name = "telemetry"

    def __init__(self, metrics: Metrics, access_log: AccessLog) -> None:
        self.metrics = metrics
        self.access_log = access_log

    async def enter(self, ctx: RequestContext) -> None:
        self.metrics.inflight.inc()

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        m = self.metrics
        m.inflight.dec()
        record = RequestRecord.of(ctx, outcome)
        model = ctx.model or ""
        m.requests.labels(ctx.endpoint, model, str(outcome.status), outcome.kind).inc()
        m.latency.labels(ctx.endpoint, model).observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            m.ttfb.labels(model).observe(record.ttfb_ms / 1000)
        if ctx.usage is not None:
            m.tokens.labels(model, "prompt").inc(ctx.usage.prompt_tokens)
            m.tokens.labels(model, "completion").inc(ctx.usage.completion_tokens)
        self.access_log.write(record)
