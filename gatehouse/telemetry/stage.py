"""The telemetry stage: first in, last out, so it sees every request's whole life."""

from __future__ import annotations

from typing import Any

from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import GatehouseError
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.record import AccessLog, RequestRecord
from gatehouse.telemetry.requestlog import RequestLog
from gatehouse.telemetry.rollups import Rollups
from gatehouse.telemetry.tracing import Tracing


class TelemetryStage:
    name = "telemetry"

    def __init__(self, metrics: Metrics, access_log: AccessLog,
                 request_log: RequestLog | None = None, rollups: Rollups | None = None,
                 tracing: Tracing | None = None) -> None:
        self.metrics = metrics
        self.genai = metrics.genai
        self.tracing = tracing
        self.access_log = access_log
        self.request_log = request_log
        self.rollups = rollups
        self._on = access_log.enabled or request_log is not None or rollups is not None
        # labelled children, looked up once per label set (labels() costs µs on the hot path);
        # every label comes from a bounded set: endpoints, configured models, statuses, outcomes
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}
        # the token counters' (prompt, completion), per model: made at its first usage, as a
        # child is a series /metrics shows (at 0) from then on
        self._tokens: dict[str, tuple[Any, Any]] = {}

    def _series(self, ctx: RequestContext, outcome: Outcome) -> tuple[Any, Any, Any]:
        key = (ctx.endpoint, ctx.model or "", str(outcome.status), outcome.kind)
        series = self._children.get(key)
        if series is None:
            m, model = self.metrics, key[1]
            series = (m.requests.labels(*key), m.latency.labels(key[0], model),
                      m.ttfb.labels(model))
            self._children[key] = series
        return series

    async def enter(self, ctx: RequestContext) -> None:
        self.metrics.inflight.inc()
        if self.tracing is not None:
            self.tracing.start(ctx)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        m = self.metrics
        m.inflight.dec()
        requests, latency, ttfb = self._series(ctx, outcome)
        requests.inc()
        end = ctx.finished_at or ctx.started
        latency.observe(end - ctx.started)
        if ctx.first_byte_at is not None:
            ttfb.observe(ctx.first_byte_at - ctx.started)
        usage = ctx.usage
        if usage is not None:
            model = ctx.model or ""
            tokens = self._tokens.get(model)
            if tokens is None:
                tokens = self._tokens[model] = (m.tokens.labels(model, "prompt"),
                                                m.tokens.labels(model, "completion"))
            prompt, completion = tokens
            prompt.inc(usage.prompt_tokens)
            completion.inc(usage.completion_tokens)
        self.genai.observe(ctx, outcome)
        if self.tracing is not None:
            self.tracing.finish(ctx, outcome)
        self.record(ctx, outcome, "api" if ctx.path.startswith("/v1") else "web")

    def record(self, ctx: RequestContext, outcome: Outcome, component: str) -> None:
        """The request's one RequestRecord, to the access log and the request log."""
        if self._on:
            self.write(RequestRecord.of(ctx, outcome, component))

    def connection_answer(self, error: GatehouseError, request_id: str, peer: str,
                          method: str, path: str) -> None:
        """The record of an answer the connection layer made without the app (414, 431, 408,
        too many connections, server full): endpoint ``connection``; the component by the
        path, ``web`` when no path had arrived."""
        if not self._on:
            return
        ctx = RequestContext(request_id, method, path, {}, (peer, 0))
        ctx.endpoint = "connection"
        ctx.finished_at = ctx.started
        self.metrics.requests.labels("connection", "", str(error.status), "error").inc()
        self.write(RequestRecord.of(ctx, Outcome("error", error.status, error),
                                    "api" if path.startswith("/v1") else "web"))

    def write(self, record: RequestRecord) -> None:
        self.access_log.write(record)
        if self.request_log is not None:
            self.request_log.add(record)
        if self.rollups is not None:
            self.rollups.add(record)
