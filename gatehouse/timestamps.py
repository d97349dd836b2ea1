"""Stored times (seconds since the epoch) as UTC datetimes, for the status page and the CLI.

A time outside what ``datetime`` holds — stored before the admin API bounded it (year 10000,
10**30) — raised in ``datetime.fromtimestamp`` wherever it was shown: it stopped every status
snapshot, and crashed the CLI's tables. It is shown as the nearest time that can be.
"""

from __future__ import annotations

from datetime import UTC, datetime

# 9999-12-31T23:59:59Z: the last second datetime (and ISO 8601's four-digit year) can show,
# and the latest time the admin API takes
LATEST = 253_402_300_799


def utc(at: float) -> datetime:
    return datetime.fromtimestamp(min(max(at, 0), LATEST), UTC)


def minute(at: float) -> str:
    """``2026-12-02 14:05 UTC``: the CLI's tables."""
    return utc(at).strftime("%Y-%m-%d %H:%M UTC")
