"""One RequestRecord per request, written as one JSON line to the access log."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson

from gatehouse.context import Outcome, RequestContext


@dataclass(slots=True)
class RequestRecord:
    time: str
    request_id: str
    client_request_id: str | None
    method: str
    path: str
    endpoint: str
    model: str | None
    backend: str | None
    upstream_request_id: str | None
    attempts: list[str]
    stream: bool
    status: int
    outcome: str
    error_code: str | None
    error_cause: str | None
    latency_ms: float
    ttfb_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    client: str | None
    # who asked (identity stage): never a secret — ids and names only
    org: str | None = None
    project: str | None = None
    key_id: str | None = None
    user_id: str | None = None
    tier: str | None = None

    @classmethod
    def of(cls, ctx: RequestContext, outcome: Outcome) -> RequestRecord:
        end = ctx.finished_at or ctx.started
        usage = ctx.usage
        error = outcome.error
        who = ctx.principal
        return cls(
            time=datetime.fromtimestamp(ctx.started_wall, UTC).isoformat(
                timespec="milliseconds"),
            request_id=ctx.request_id, client_request_id=ctx.client_request_id,
            method=ctx.method, path=ctx.path, endpoint=ctx.endpoint, model=ctx.model,
            backend=ctx.backend, upstream_request_id=ctx.upstream_request_id,
            attempts=ctx.attempts, stream=ctx.stream,
            status=outcome.status, outcome=outcome.kind,
            error_code=error.code if error else None,
            error_cause=error.cause if error else None,
            latency_ms=round((end - ctx.started) * 1000, 3),
            ttfb_ms=round((ctx.first_byte_at - ctx.started) * 1000, 3)
            if ctx.first_byte_at else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            client=str(ctx.client_ip) if ctx.client_ip is not None else
            ctx.client[0] if ctx.client else None,
            org=who.org_id if who else None,
            project=who.project_id if who else None,
            key_id=who.key_id if who else None,
            user_id=who.user_id if who else None,
            tier=who.tier if who else None,
        )


class AccessLog:
    """Writes records as JSON lines (stdout by default) through the ``gatehouse.access`` logger."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.logger = logging.getLogger("gatehouse.access")
        if not self.logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.setLevel(logging.INFO)
            self.logger.propagate = False

    def write(self, record: RequestRecord) -> None:
        if self.enabled:
            self.logger.info(orjson.dumps(asdict(record)).decode())
