"""OTLP/HTTP export of spans and the GenAI metrics through the OpenTelemetry SDK.

Imported only when ``[telemetry] otlp_endpoint`` is set (app.py): without it the SDK is never
loaded. One span per request (kind SERVER, named ``chat {model}`` after the GenAI conventions),
one child span per call to a backend (kind CLIENT) whose W3C ``traceparent`` goes to the
backend; a caller's own ``traceparent`` makes the request's span its child.

Nothing here blocks or fails a request: a finished span is appended to a bounded queue (full:
dropped and counted), and a thread sends batches; a collector that is down costs that thread
its timeouts, the queue fills and drops are counted in ``gatehouse_otlp_dropped_total``, and
one warning a minute says so. The SDK's own log lines are silenced (they would repeat per
batch); the ``otlp_headers`` are secrets and never logged."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gatehouse.config import TelemetrySettings, UpstreamSettings
from gatehouse.context import Outcome, RequestContext
from gatehouse.telemetry.genai import (
    DURATION_BUCKETS,
    OPERATIONS,
    PROVIDER,
    TOKEN_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    error_type,
)
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.record import error_class

log = logging.getLogger("gatehouse.otlp")
SPAN_NOTE = "otlp.span"
QUEUE_SIZE = 2048  # finished spans waiting for the exporter thread
MEASUREMENTS_SIZE = 65536  # GenAI metric values waiting to be recorded into the SDK's histograms
BATCH_SIZE = 512
EXPORT_EVERY = 1.0  # seconds
EXPORT_TIMEOUT = 5.0  # seconds per batch, retries included
WARN_EVERY = 60.0  # seconds between warnings about failed exports

# the GenAI instruments: name → (unit, bucket boundaries)
INSTRUMENTS: dict[str, tuple[str, Sequence[float]]] = {
    "gen_ai.server.request.duration": ("s", DURATION_BUCKETS),
    "gen_ai.server.time_to_first_token": ("s", TTFT_BUCKETS),
    "gen_ai.server.time_per_output_token": ("s", TPOT_BUCKETS),
    "gen_ai.client.operation.duration": ("s", DURATION_BUCKETS),
    "gen_ai.client.token.usage": ("{token}", TOKEN_BUCKETS),
}


class Warnings:
    """At most one warning per ``every`` seconds about failed exports, with the count since."""

    def __init__(self, endpoint: str, every: float = WARN_EVERY) -> None:
        self.endpoint = endpoint
        self.every = every
        self.last = -every
        self.lost = 0
        self.lock = threading.Lock()

    def failed(self, what: str, count: int) -> None:
        with self.lock:
            self.lost += count
            now = time.monotonic()
            if now - self.last < self.every:
                return
            self.last, lost, self.lost = now, self.lost, 0
        log.warning("OTLP: could not export %s to %s (%d lost since the last warning); "
                    "requests are not affected", what, self.endpoint, lost)


class SpanQueue(SpanProcessor):
    """A bounded queue of finished spans and the thread that exports them in batches."""

    def __init__(self, exporter: SpanExporter, on_drop: Callable[[str, int], None],
                 warnings: Warnings, size: int = QUEUE_SIZE,
                 every_tick: Callable[[], None] = lambda: None) -> None:
        self.exporter = exporter
        self.every_tick = every_tick
        self.on_drop = on_drop
        self.warnings = warnings
        self.size = size
        self.queue: collections.deque[ReadableSpan] = collections.deque()
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="gatehouse-otlp-spans",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        if len(self.queue) >= self.size:
            self.on_drop("queue_full", 1)
            return
        self.queue.append(span)
        if len(self.queue) >= BATCH_SIZE:
            self.wake.set()

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(EXPORT_EVERY)
            self.wake.clear()
            self.every_tick()
            self._send()
        self.every_tick()
        self._send()

    def _send(self) -> None:
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(BATCH_SIZE, len(self.queue)))]
            try:
                result = self.exporter.export(batch)
            except Exception:  # noqa: BLE001 - whatever the exporter raises, the batch is lost
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self.on_drop("export_failed", len(batch))
                self.warnings.failed("spans", len(batch))
                if self.stopping:
                    return  # at shutdown, one failed try is enough

    def shutdown(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(EXPORT_TIMEOUT + 1)
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _MetricExporter(OTLPMetricExporter):
    """Failed metric exports: counted in the rate-limited warning, not logged per try."""

    def __init__(self, warnings: Warnings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warnings = warnings

    def export(self, metrics_data: Any, timeout_millis: float | None = 10_000,
               **kwargs: Any) -> MetricExportResult:
        try:
            result = super().export(metrics_data, timeout_millis, **kwargs)
        except Exception:  # noqa: BLE001 - never let the reader's thread die
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.warnings.failed("metrics", 1)
        return result


class _CallSpan:
    __slots__ = ("span", "traceparent")

    def __init__(self, span: Any) -> None:
        self.span = span
        context = span.get_span_context()
        # version 00 with the sampled flag only (a level-2 "random" bit confuses old parsers)
        self.traceparent = (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                            f"{int(context.trace_flags) & 1:02x}") if context.is_valid else None

    def end(self, status: int | None, etype: str) -> None:
        span = self.span
        if span.is_recording():
            if status:
                span.set_attribute("http.response.status_code", status)
            if etype:
                span.set_attribute("error.type", etype)
                span.set_status(Status(StatusCode.ERROR, etype))
        span.end()


class OTLPExport:
    """The ``Tracing`` of gatehouse/telemetry/tracing.py, exporting over OTLP/HTTP."""

    def __init__(self, settings: TelemetrySettings, metrics: Metrics,
                 upstreams: Mapping[str, UpstreamSettings] | None = None) -> None:
        assert settings.otlp_endpoint is not None
        # the SDK logs every failed try (and may repeat the request's details): ours says it
        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
        self.settings = settings
        self.metrics = metrics
        self.endpoint = settings.otlp_endpoint
        self.backends = {name: address(up.base_url) for name, up in (upstreams or {}).items()}
        self.warnings = Warnings(self.endpoint)
        self.resource = Resource.create({
            "service.name": settings.otlp_service_name,
            "service.instance.id": f"{uuid.uuid4()}",  # one per worker: their sums add up
            "process.pid": os.getpid()})
        self.spans = SpanQueue(
            OTLPSpanExporter(endpoint=self.endpoint + "/v1/traces",
                             headers=dict(settings.otlp_headers), timeout=EXPORT_TIMEOUT),
            lambda reason, n: metrics.otlp_dropped.labels(reason).inc(n), self.warnings,
            every_tick=self._replay)
        self.provider = TracerProvider(
            resource=self.resource,
            sampler=ParentBased(TraceIdRatioBased(settings.otlp_sample_ratio)))
        self.provider.add_span_processor(self.spans)
        self.tracer = self.provider.get_tracer("gatehouse")
        self.propagator = TraceContextTextMapPropagator()
        self.meters: MeterProvider | None = None
        self.instruments: dict[str, Any] = {}
        # the SDK's record() hashes its attributes every time (~10 µs): the request path only
        # appends here, and the exporter thread records them once a second
        self.measurements: collections.deque[tuple[str, float, dict[str, str]]] = \
            collections.deque()
        self.measurements_dropped = metrics.otlp_dropped.labels("metrics_queue_full")

    async def start_export(self) -> None:
        """Start the exporting threads (in the worker, after any fork)."""
        self.spans.start()
        reader = PeriodicExportingMetricReader(
            _MetricExporter(self.warnings, endpoint=self.endpoint + "/v1/metrics",
                            headers=dict(self.settings.otlp_headers), timeout=EXPORT_TIMEOUT),
            export_interval_millis=self.settings.otlp_metrics_interval * 1000,
            export_timeout_millis=EXPORT_TIMEOUT * 1000)
        self.meters = MeterProvider(metric_readers=[reader], resource=self.resource)
        meter = self.meters.get_meter("gatehouse")
        self.instruments = {
            name: meter.create_histogram(name, unit=unit,
                                         explicit_bucket_boundaries_advisory=list(buckets))
            for name, (unit, buckets) in INSTRUMENTS.items()}
        self.metrics.genai.otel = self.record

    def record(self, name: str, value: float, attributes: dict[str, str]) -> None:
        if len(self.measurements) >= MEASUREMENTS_SIZE:
            self.measurements_dropped.inc()
            return
        self.measurements.append((name, value, attributes))

    def _replay(self) -> None:
        instruments, measurements = self.instruments, self.measurements
        if not instruments:
            return
        for _ in range(len(measurements)):
            name, value, attributes = measurements.popleft()
            instruments[name].record(value, attributes)

    def start(self, ctx: RequestContext) -> None:
        parent = None
        traceparent = ctx.headers.get("traceparent")
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            if "tracestate" in ctx.headers:
                carrier["tracestate"] = ctx.headers["tracestate"]
            parent = self.propagator.extract(carrier)
        ctx.notes[SPAN_NOTE] = self.tracer.start_span(
            ctx.endpoint or "request", context=parent, kind=SpanKind.SERVER,
            start_time=int(ctx.started_wall * 1e9))

    def call(self, ctx: RequestContext, backend: str, model: str) -> _CallSpan:
        parent = ctx.notes.get(SPAN_NOTE)
        op = OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": op, "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model, "gatehouse.backend": backend,
            "gatehouse.request_id": ctx.request_id}
        address = self.backends.get(backend)
        if address is not None:
            attributes["server.address"], attributes["server.port"] = address
        span = self.tracer.start_span(
            f"{op} {model}", kind=SpanKind.CLIENT, attributes=attributes,
            context=trace.set_span_in_context(parent) if parent is not None else None)
        return _CallSpan(span)

    def finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        span = ctx.notes.pop(SPAN_NOTE, None)
        if span is None:
            return
        if not span.is_recording():
            span.end()
            return
        op = OPERATIONS.get(ctx.endpoint)
        if op is not None:
            span.update_name(f"{op} {ctx.model}" if ctx.model else op)
            span.set_attributes({"gen_ai.operation.name": op, "gen_ai.provider.name": PROVIDER})
        else:
            span.update_name(f"{ctx.method} {ctx.endpoint or 'unknown'}")
        error = outcome.error
        code = error.code if error is not None else None
        attributes: dict[str, Any] = {
            "http.request.method": ctx.method, "url.path": ctx.path[:512],
            "http.response.status_code": outcome.status,
            "gatehouse.request_id": ctx.request_id, "gatehouse.endpoint": ctx.endpoint,
            "gatehouse.outcome": outcome.kind,
            "gatehouse.error_class": error_class(outcome.status, code, outcome.kind),
            "gatehouse.stream": ctx.stream}
        optional = {
            "gen_ai.request.model": ctx.model, "gen_ai.response.model": ctx.backend_model,
            "gen_ai.response.id": ctx.upstream_request_id,
            "gatehouse.client_request_id": ctx.client_request_id, "gatehouse.ray_id": ctx.ray_id,
            "gatehouse.backend": ctx.backend, "gatehouse.edge": ctx.edge_verdict,
            "gatehouse.quota": ctx.quota_decision}
        attributes.update({k: v for k, v in optional.items() if v is not None})
        who = ctx.principal
        if who is not None:
            for name in ("org_id", "project_id", "tier"):
                value = getattr(who, name, None)
                if value is not None:
                    attributes[f"gatehouse.{name}"] = value
        if ctx.attempts:
            attributes["gatehouse.attempts"] = list(ctx.attempts)
        if ctx.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = ctx.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = ctx.usage.completion_tokens
        if ctx.admission_wait is not None:
            attributes["gatehouse.admission_wait_ms"] = ctx.admission_wait * 1000
        etype = error_type(outcome)
        if etype:
            attributes["error.type"] = etype
        span.set_attributes(attributes)
        if outcome.status >= 500 or outcome.kind == "upstream_aborted":
            span.set_status(Status(StatusCode.ERROR, etype or str(outcome.status)))
        span.end()

    async def aclose(self) -> None:
        """The last spans and metrics go out (each bounded by the export timeout)."""
        self.metrics.genai.otel = None
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self.provider.shutdown()  # the span queue's last batch
        if self.meters is not None:
            self.meters.shutdown(timeout_millis=EXPORT_TIMEOUT * 1000)


def address(base_url: str) -> tuple[str, int]:
    """server.address and server.port of a backend."""
    url = urlsplit(base_url)
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
