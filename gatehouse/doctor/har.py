"""Step 5: a HAR file from the browser (DevTools → Network → "Save all as HAR"). HAR 1.2:
``{"log": {"entries": [{"startedDateTime", "time", "request": {"method", "url", "headers"},
"response": {"status", "headers", "content"}, "timings": {...}}]}}``. Out of it: the failing
requests, status codes, request ids and Ray IDs, timings, and the share that failed."""

from __future__ import annotations

import codecs
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gatehouse.client import Answer, Outcome
from gatehouse.doctor.statuspage import MAX_TEXT, text


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


def _headers(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise HarError(f"{where}: headers are not a list")
    return {str(h.get("name", "")).lower(): str(h.get("value", ""))
            for h in raw if isinstance(h, dict)}


def _object(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HarError(f"{where}: not an object")
    return raw


def _status(raw: Any, where: str) -> int:
    """An HTTP status (0: no answer); a HAR writer's float (``200.0``) is read as its integer."""
    if raw is None:
        return 0
    if isinstance(raw, str) and raw.isdecimal() and len(raw) <= 3:
        raw = int(raw)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 999:
        raise HarError(f"{where}: status {str(raw)[:20]} is not an HTTP status")
    return raw


def _ms(raw: Any, where: str) -> float:
    try:
        ms = 0.0 if raw is None or isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        ms = math.nan
    if not math.isfinite(ms):
        raise HarError(f"{where}: time {str(raw)[:20]} is not a number of milliseconds")
    return max(0.0, ms)


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A string from the file as the report may show it: bounded, no control sequences."""
    return text(value if isinstance(value, str) else str(value), limit) or ""


def entry(raw: Any, where: str = "entry") -> HarRequest:
    raw = _object(raw, where)
    request = _object(raw.get("request"), f"{where}.request")
    response = _object(raw.get("response"), f"{where}.response")
    status = _status(response.get("status"), f"{where}.response")
    content = _object(response.get("content"), f"{where}.response.content")
    body = content.get("text")
    answer = Answer.read(status, _headers(response.get("headers"), f"{where}.response"),
                         body if isinstance(body, str) and body else None)
    error = response.get("_error") or (response.get("statusText") if status == 0 else None)
    return HarRequest(
        started=_text(raw.get("startedDateTime", "")),
        method=_text(request.get("method", "GET"), 20),
        url=_text(request.get("url", "")), status=status, ms=_ms(raw.get("time"), where),
        request_id=text(answer.request_id), ray_id=text(answer.ray_id),
        challenge=status != 0 and answer.outcome is Outcome.CHALLENGE,
        blocked=status != 0 and answer.outcome is Outcome.ACCESS_DENIED,
        error=None if error is None else _text(error))


def summarize(path: str | Path, har: Any) -> HarSummary:
    log = har.get("log") if isinstance(har, dict) else None
    raw = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(raw, list):
        raise HarError(f"{path}: this HAR file cannot be read: not a HAR 1.2 file (no "
                       "log.entries list)")
    try:
        entries = [entry(e, f"entry {n}") for n, e in enumerate(raw, 1)]
    except HarError as exc:
        raise HarError(f"{path}: this HAR file cannot be read: {exc}") from None
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
    """The file's summary; :class:`HarError` says why a file cannot be read (it is not read
    with Python's json, whose recursion a 100,000-deep array exhausts)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise HarError(f"{path}: this HAR file cannot be read: {exc.strerror or exc}") from None
    try:
        har = orjson.loads(raw.removeprefix(codecs.BOM_UTF8))
    except orjson.JSONDecodeError as exc:
        raise HarError(f"{path}: this HAR file cannot be read: not JSON ({exc})") from None
    return summarize(path, har)
