"""Fixed, calendar-aligned windows (UTC): a minute starts at :00, a day at 00:00, a month on
the 1st. Each counter lives for exactly one window, so "resets at" is exact and the same on
every replica (given clocks kept in sync by NTP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

_FIXED = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class Span:
    """One window instance: ``[start, end)`` in Unix seconds, and its key suffix."""

    start: float
    end: float
    tag: str


def span(window: str, now: float) -> Span:
    if window in _FIXED:
        size = _FIXED[window]
        start = now - now % size
        return Span(start, start + size, f"{window[0]}{int(start)}")
    if window == "month":
        day = datetime.fromtimestamp(now, UTC)
        first = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = first.replace(year=first.year + (first.month == 12),
                            month=first.month % 12 + 1)
        return Span(first.timestamp(), nxt.timestamp(), f"mo{first:%Y%m}")
    raise ValueError(f"unknown window {window!r}")


def format_reset(seconds: float) -> str:
    """OpenAI's style for ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``6m0s``, ``1h30m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = int(-(-seconds // 1))  # whole seconds, rounded up
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
