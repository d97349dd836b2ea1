"""What the stages ask of tracing, without importing OpenTelemetry: the exporter
(gatehouse/telemetry/otlp.py, which does) is loaded only when ``[telemetry] otlp_endpoint`` is
set, so a gateway without it neither imports the SDK nor pays for spans."""

from __future__ import annotations

from typing import Protocol

from gatehouse.context import Outcome, RequestContext


class CallSpan(Protocol):
    """The span of one call to a backend, a child of the request's span."""

    traceparent: str | None  # sent to the backend (W3C trace context); None: not sampled

    def end(self, status: int | None, etype: str) -> None: ...


class Tracing(Protocol):
    def start(self, ctx: RequestContext) -> None:
        """Open the request's span (its parent: the client's ``traceparent``, if any)."""

    def call(self, ctx: RequestContext, backend: str, model: str) -> CallSpan:
        """Open the span of a call to ``backend`` (asking it for ``model``)."""

    def finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        """Close the request's span with what the stages decided."""

    async def start_export(self) -> None: ...

    async def aclose(self) -> None: ...
