"""The usage history's day: each request's UTC date, formatted once per day, not per request."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from gatehouse.store.usage import UsageBook


def test_each_request_lands_on_its_utc_day_across_midnights() -> None:
    book = UsageBook(None)  # type: ignore[arg-type]  # the day needs no store
    assert book.day_of(86399.999) == "1970-01-01" and book.day_of(86400.0) == "1970-01-02"
    midnight = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert book.day_of(midnight - 0.001) == "2026-11-30"
    assert book.day_of(midnight) == "2026-12-01"
    assert book.day_of(midnight - 1) == "2026-11-30"  # back again: not stuck on the last day
    rng = random.Random(7)
    for _ in range(2000):  # any order of times, against datetime's own answer
        at = rng.uniform(0, 4e9)
        assert book.day_of(at) == datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
