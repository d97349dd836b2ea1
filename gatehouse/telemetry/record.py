"""One RequestRecord per request, on every path: what each stage decided, in one object.

The record is built on the request path, so it only copies fields already on the context —
no formatting, no lookups. Text is made later, off the request path: by the access log (one
JSON line) and by the request log's batch writer (a row in the store).

Error classes (``error_class``), what rollups and lookups group by::

    ok            status < 400
    client_error  other 4xx (bad request, unknown model, too large, …)
    auth          401 / 403 (missing or bad key, expired session, not allowed)
    rate_limited  429 rate_limit_exceeded
    quota         429 insufficient_quota
    blocked       the edge: 403 1020, challenge_required, cookies_required
    server_error  500 and other 5xx (upstream errors after failover, gateway bugs)
    unavailable   503 other than at_capacity (upstream, quota or identity unavailable)
    at_capacity   503 at_capacity (shed by admission or every backend full)
    timeout       504
    client_gone   the client left before the answer was complete (499)
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gatehouse.context import Outcome, RequestContext

ERROR_CLASSES = ("ok", "client_error", "auth", "rate_limited", "quota", "blocked",
                 "server_error", "unavailable", "at_capacity", "timeout", "client_gone")
COMPONENTS = ("api", "web", "login", "admin")
BLOCK_CODES = frozenset({"1020", "challenge_required", "cookies_required"})


def error_class(status: int, code: str | None, kind: str = "") -> str:
    if kind == "client_disconnected" or status == 499:
        return "client_gone"
    if status < 400:
        return "ok"
    if code in BLOCK_CODES:
        return "blocked"
    if status == 429:
        return "quota" if code == "insufficient_quota" else "rate_limited"
    if status in (401, 403):
        return "auth"
    if status < 500:
        return "client_error"
    if status == 503:
        return "at_capacity" if code == "at_capacity" else "unavailable"
    if status == 504:
        return "timeout"
    return "server_error"


@dataclass(slots=True)
class RequestRecord:
    at: float  # wall clock at arrival, Unix seconds
    request_id: str
    client_request_id: str | None
    ray_id: str | None
    component: str
    method: str
    path: str
    endpoint: str
    model: str | None
    stream: bool
    status: int
    outcome: str  # ok | error | upstream_aborted | client_disconnected
    error_class: str
    error_type: str | None
    error_code: str | None
    error_cause: str | None  # private: operators only (may name internal addresses)
    # who asked (identity stage): never a secret — ids and names only
    org: str | None
    project: str | None
    key_id: str | None
    user_id: str | None
    tier: str | None
    client: object  # an address object or text; made text when written
    # what the stages decided
    edge: str | None  # pass | deny | challenge; None: not screened
    quota: str | None  # allowed | local | rate_limit_exceeded | insufficient_quota | …
    admission_wait_ms: float | None
    attempts: list[str]  # backends tried: "name" (answered) or "name:why" (skipped, failed)
    backend: str | None
    upstream_status: int | None
    upstream_request_id: str | None  # the backend's own id for the call, if it sent one
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    usage_counted_by: str | None  # upstream | gateway (the backend reported none)
    latency_ms: float
    ttfb_ms: float | None  # to the upstream's first byte (a stream's first event)

    @classmethod
    def of(cls, ctx: RequestContext, outcome: Outcome, component: str) -> RequestRecord:
        started = ctx.started
        usage = ctx.usage
        error = outcome.error
        who = ctx.principal
        if error is not None:
            etype: str | None = error.type
            code: str | None = error.code
        elif ctx.edge_verdict == "challenge":  # the check itself: a page, not an error
            etype, code = "access_denied", "challenge_required"
        else:
            etype = code = None
        quota = ctx.quota_decision
        if quota == "refused":
            quota = code
        wait = ctx.admission_wait
        first = ctx.first_byte_at
        return cls(
            ctx.started_wall, ctx.request_id, ctx.client_request_id, ctx.ray_id, component,
            ctx.method, ctx.path, ctx.endpoint, ctx.model, ctx.stream,
            outcome.status, outcome.kind, error_class(outcome.status, code, outcome.kind),
            etype, code, error.cause if error is not None else None,
            who.org_id if who else None, who.project_id if who else None,
            who.key_id if who else None, who.user_id if who else None,
            who.tier if who else None,
            ctx.client_ip if ctx.client_ip is not None else
            ctx.client[0] if ctx.client else None,
            ctx.edge_verdict, quota, wait * 1000 if wait is not None else None,
            ctx.attempts, ctx.backend, ctx.upstream_status, ctx.upstream_request_id,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            usage.total_tokens if usage else None,
            usage.counted_by if usage else None,
            ((ctx.finished_at or started) - started) * 1000,
            (first - started) * 1000 if first is not None else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (access log, operator lookup): times as text, numbers rounded."""
        out = {name: getattr(self, name) for name in FIELDS}
        out["time"] = iso_time(self.at)
        out["client"] = None if self.client is None else str(self.client)
        for name in ("latency_ms", "ttfb_ms", "admission_wait_ms"):
            if out[name] is not None:
                out[name] = round(out[name], 3)
        return out


FIELDS: tuple[str, ...] = RequestRecord.__slots__


def iso_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


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
            self.logger.info(orjson.dumps(record.as_dict()).decode())
