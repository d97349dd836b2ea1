"""Step 5: a HAR file from the browser (DevTools → Network → "Save all as HAR"). HAR 1.2:
``{"log": {"entries": [{"startedDateTime", "time", "request": {"method", "url", "headers"},
"response": {"status", "headers", "content"}, "timings": {...}}]}}``. Out of it: the failing
requests, status codes, request ids and Ray IDs, timings, and the share that failed."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatehouse.client import Answer, Outcome


class HarError(ValueError):
    """The file is not a HAR the doctor can read."""


@dataclass(slots=True)
class HarRequest:
    started: str
    method: str
    url: str
    status: int          # 0: no answer (blocked, offline, cancelled)
    ms: float
    request_id: str | None
    ray_id: str | None
    challenge: bool
    blocked: bool        # a 1020 page or error
    error: str | None    # the browser's own reason when there was no answer

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 400


@dataclass(slots=True)
class HarSummary:
    path: str
    total: int
    failing: list[HarRequest] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    ray_ids: list[str] = field(default_factory=list)
    challenges: int = 0
    blocked: int = 0
    median_ms: float | None = None
    slowest: HarRequest | None = None

    @property
    def failing_pct(self) -> float:
        return round(100 * len(self.failing) / self.total, 1) if self.total else 0.0


def _headers(raw: Any) -> dict[str, str]:
    return {str(h.get("name", "")).lower(): str(h.get("value", ""))
            for h in raw or [] if isinstance(h, dict)}


def entry(raw: dict[str, Any]) -> HarRequest:
    request, response = raw.get("request") or {}, raw.get("response") or {}
    status = int(response.get("status") or 0)
    text = str((response.get("content") or {}).get("text") or "")
    answer = Answer.read(status, _headers(response.get("headers")), text or None)
    return HarRequest(
        started=str(raw.get("startedDateTime", "")), method=str(request.get("method", "GET")),
        url=str(request.get("url", "")), status=status,
        ms=max(0.0, float(raw.get("time") or 0)),
        request_id=answer.request_id, ray_id=answer.ray_id,
        challenge=status != 0 and answer.outcome is Outcome.CHALLENGE,
        blocked=status != 0 and answer.outcome is Outcome.ACCESS_DENIED,
        error=response.get("_error") or (response.get("statusText") if status == 0 else None))


def summarize(path: str | Path, har: dict[str, Any]) -> HarSummary:
    try:
        entries = [entry(e) for e in har["log"]["entries"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise HarError(f"{path}: not a HAR 1.2 file ({exc})") from None
    summary = HarSummary(str(path), len(entries))
    summary.failing = [e for e in entries if e.failed]
    summary.statuses = dict(sorted(Counter(str(e.status) for e in entries).items()))
    quoted = summary.failing or entries  # support wants the failures' ids
    summary.request_ids = list(dict.fromkeys(e.request_id for e in quoted if e.request_id))
    summary.ray_ids = list(dict.fromkeys(e.ray_id for e in quoted if e.ray_id))
    summary.challenges = sum(e.challenge for e in entries)
    summary.blocked = sum(e.blocked for e in entries)
    if entries:
        summary.median_ms = round(statistics.median(e.ms for e in entries), 1)
        summary.slowest = max(entries, key=lambda e: e.ms)
    return summary


def read_har(path: str | Path) -> HarSummary:
    try:
        har = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise HarError(f"{path}: {exc}") from None
    return summarize(path, har)
