"""Metrics named after OpenTelemetry's GenAI semantic conventions (gen-ai-metrics.md).

The gateway is a GenAI *server* to its clients (``gen_ai.server.*``: request duration, time to
first token, time per output token) and a GenAI *client* of its backends
(``gen_ai.client.operation.duration``, one per call to a backend, and
``gen_ai.client.token.usage``). Names follow OpenTelemetry's Prometheus mapping: dots become
underscores and the unit ``s`` a ``_seconds`` suffix; bucket boundaries are the ones the
conventions recommend.

Every label comes from a bounded set: the operation (three endpoints), the provider (one), the
model asked for (configured models only: the schema stage refuses others before ``ctx.model``
is set), the backend's model (configuration), and ``error.type`` — the gateway's error code
(docs/errors.md), a backend's own HTTP status, or the failure class of a backend call.
Labelled children are looked up once per label set, as the telemetry stage does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from gatehouse.context import Outcome, RequestContext

# gen_ai.operation.name by endpoint; other endpoints are not GenAI operations
OPERATIONS = {"chat.completions": "chat", "completions": "text_completion",
              "embeddings": "embeddings", "responses": "chat"}  # the Responses API chats too
# gen_ai.provider.name: the API flavour the gateway serves (and speaks to its backends)
PROVIDER = "openai"

DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)

MODEL_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                "gen_ai_response_model"]


def error_type(outcome: Outcome) -> str:
    """``error.type`` of a request: "" for a success; else the error's code (``1020``,
    ``rate_limit_exceeded``, ``upstream_timeout``, …), ``client_disconnected``, or the HTTP
    status of a backend's own refusal passed on (``400``)."""
    if outcome.kind == "client_disconnected":
        return "client_disconnected"
    error = outcome.error
    if error is not None:
        return error.code or error.type
    return str(outcome.status) if outcome.status >= 400 else ""


class _Series:
    """The children of one (operation, model, backend model) and, with OTLP, its attributes;
    made the first time a request of that set is metered, so errors mint none."""

    __slots__ = ("attributes", "input", "output", "tpot", "ttft")

    def __init__(self, metrics: GenAIMetrics, base: tuple[str, str, str, str]) -> None:
        self.ttft = metrics.time_to_first_token.labels(*base)
        self.tpot = metrics.time_per_output_token.labels(*base)
        self.input = metrics.token_usage.labels(*base, "input")
        self.output = metrics.token_usage.labels(*base, "output")
        self.attributes = attributes(base[0], base[2], base[3], "")


class GenAIMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "gen_ai.server.request.duration: time from request to last byte of a GenAI "
            "operation's answer.", [*MODEL_LABELS, "error_type"], buckets=DURATION_BUCKETS,
            registry=r)
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "gen_ai.server.time_to_first_token: time from request to a stream's first event, "
            "successful streams only.", MODEL_LABELS, buckets=TTFT_BUCKETS, registry=r)
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "gen_ai.server.time_per_output_token: time per output token after the first, "
            "successful streams of two or more tokens only.", MODEL_LABELS,
            buckets=TPOT_BUCKETS, registry=r)
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "gen_ai.client.token.usage: input and output tokens of each metered operation.",
            [*MODEL_LABELS, "gen_ai_token_type"], buckets=TOKEN_BUCKETS, registry=r)
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "gen_ai.client.operation.duration: each call of the gateway to a backend, from "
            "sending it to the end of its answer.", [*MODEL_LABELS, "error_type"],
            buckets=DURATION_BUCKETS, registry=r)
        # (labelled child, OpenTelemetry attributes) by (operation, model, backend model, error)
        self._server: dict[tuple[str, str, str, str], tuple[Any, dict[str, str]]] = {}
        self._client: dict[tuple[str, str, str, str], tuple[Any, dict[str, str]]] = {}
        self._series: dict[tuple[str, str, str], _Series] = {}
        # set by the OTLP exporter when it is on: (instrument, value, attributes) → recorded
        self.otel: Callable[[str, float, dict[str, str]], None] | None = None

    def observe(self, ctx: RequestContext, outcome: Outcome) -> None:
        """A request's server-side GenAI metrics (the telemetry stage's exit)."""
        op = OPERATIONS.get(ctx.endpoint)
        if op is None:
            return
        etype = error_type(outcome)
        model, backend_model = ctx.model or "", ctx.backend_model or ""
        key = (op, model, backend_model, etype)
        found = self._server.get(key) or _timed(self._server, self.request_duration, key)
        end = ctx.finished_at or ctx.started
        duration = end - ctx.started
        found[0].observe(duration)
        otel = self.otel
        if otel is not None:
            otel("gen_ai.server.request.duration", duration, found[1])
        usage = ctx.usage
        first = ctx.first_byte_at
        timed = not etype and ctx.stream and first is not None
        if usage is None and not timed:
            return
        series = self._series.get(key[:3])
        if series is None:
            series = self._series[key[:3]] = _Series(self, (op, PROVIDER, model, backend_model))
        if usage is not None:
            series.input.observe(usage.prompt_tokens)
            series.output.observe(usage.completion_tokens)
            if otel is not None:
                otel("gen_ai.client.token.usage", usage.prompt_tokens,
                     {**series.attributes, "gen_ai.token.type": "input"})
                otel("gen_ai.client.token.usage", usage.completion_tokens,
                     {**series.attributes, "gen_ai.token.type": "output"})
        if not timed or first is None:
            return  # TTFT and TPOT: successful streams (a whole answer's first byte is its last)
        ttft = first - ctx.started
        series.ttft.observe(ttft)
        if otel is not None:
            otel("gen_ai.server.time_to_first_token", ttft, series.attributes)
        if usage is not None and usage.completion_tokens > 1:
            tpot = (end - first) / (usage.completion_tokens - 1)
            series.tpot.observe(tpot)
            if otel is not None:
                otel("gen_ai.server.time_per_output_token", tpot, series.attributes)

    def call(self, endpoint: str, model: str, backend_model: str, seconds: float,
             etype: str) -> None:
        """One call to a backend (the upstream stage): ``etype`` "" when it answered, else
        its failure (``ConnectFailed``, ``TimedOut``, ``Broken``, or the HTTP status)."""
        op = OPERATIONS.get(endpoint, endpoint)
        key = (op, model, backend_model, etype)
        found = self._client.get(key) or _timed(self._client, self.operation_duration, key)
        found[0].observe(seconds)
        if self.otel is not None:
            self.otel("gen_ai.client.operation.duration", seconds, found[1])


def _timed(cache: dict[tuple[str, str, str, str], tuple[Any, dict[str, str]]],
           histogram: Histogram, key: tuple[str, str, str, str]) -> tuple[Any, dict[str, str]]:
    """A duration histogram's child for (operation, model, backend model, error), cached."""
    op, model, backend_model, etype = key
    found = cache[key] = (histogram.labels(op, PROVIDER, model, backend_model, etype),
                          attributes(*key))
    return found


def attributes(op: str, model: str, backend_model: str, etype: str) -> dict[str, str]:
    """The OpenTelemetry attributes of a label set (empty values left out)."""
    out = {"gen_ai.operation.name": op, "gen_ai.provider.name": PROVIDER,
           "gen_ai.request.model": model, "gen_ai.response.model": backend_model,
           "error.type": etype}
    return {k: v for k, v in out.items() if v}
