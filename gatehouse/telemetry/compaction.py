"""Compaction: minute rollups folded into hours, hours into UTC days, by every replica in the
background, so 30- and 90-day windows keep their data after minute rows are deleted.

Why marking rows and not a unique key per (bucket, dimensions): a unique key with
insert-if-absent makes the first replica's hour row final, and a minute row that arrives later
(a replica whose store was down flushes its kept cells when it comes back) would then be lost
or, if added to the hour row, counted twice by a reader that still sees the minute. Instead each
run folds the rows *not compacted yet* into new hour rows and marks those minute rows
``compacted`` in the same transaction (store/rollups.py, ``RollupRows.compact``): a count is
either in its minute row or in an hour row, never both, never neither. Replicas running at once
take disjoint rows (PostgreSQL ``FOR UPDATE SKIP LOCKED``); on SQLite each takes the write lock
before it reads, so they fold one after the other (and should one still find rows marked by
another, the marking's row count rolls it back). A late minute row is simply one more
row to fold: the next run makes another hour row for the same hour, and readers sum rows.

Runs start only for closed buckets, ``DELAY_SECONDS`` (two rollup flushes) after their end, so
a bucket is usually folded once, into one row per dimension set. Rows are deleted after their
retention — minutes and hours only once compacted, so retention never loses a count that no
coarser row holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatehouse.config import TelemetrySettings
from gatehouse.store.flusher import Flusher
from gatehouse.store.rollups import COMPACT_BATCH, RollupRows
from gatehouse.telemetry.rollups import FLUSH_SECONDS

log = logging.getLogger("gatehouse.telemetry")
COMPACT_SECONDS = 60.0
DELAY_SECONDS = 2 * FLUSH_SECONDS
MAX_BATCHES = 20  # per grain per run: a backlog is worked off over several runs
PRUNE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each grain's rows are kept, in days (``[telemetry] rollup_*_days``)."""

    minute_days: float = 14.0
    hour_days: float = 100.0
    day_days: float = 400.0

    def minutes(self, grain: str) -> int:
        days = {"minute": self.minute_days, "hour": self.hour_days, "day": self.day_days}
        return int(days[grain] * 1440)


def retention(settings: TelemetrySettings) -> Retention:
    return Retention(settings.rollup_minute_days, settings.rollup_hour_days,
                     settings.rollup_day_days)


class Compactor:
    def __init__(self, rows: RollupRows, retention: Retention, *,
                 every: float = COMPACT_SECONDS, delay: float = DELAY_SECONDS,
                 batch: int = COMPACT_BATCH, clock: Callable[[], float] = time.time) -> None:
        self.rows = rows
        self.retention = retention
        self.delay = delay
        self.batch = batch
        self.clock = clock
        self._pruned = 0.0
        # no last run on close: what is not folded now is folded after the next start
        self._flusher = Flusher(self.run, every, on_close=False)

    async def start(self) -> None:
        self._flusher.start()

    async def run(self) -> None:
        """One run in the background: failures are logged and retried on the next run."""
        try:
            await self.compact()
            if self.clock() - self._pruned > PRUNE_SECONDS:
                self._pruned = self.clock()
                await self.prune()
        except Exception as exc:  # the store down, or another replica was first
            log.warning("rollups: compaction did not finish (%s); will retry",
                        type(exc).__name__)

    async def compact(self) -> dict[str, int]:
        """Fold every closed hour's minute rows and every closed day's hour rows (up to
        ``MAX_BATCHES`` batches each); the rows folded per grain."""
        ready = int((self.clock() - self.delay) // 60)  # the minute a bucket must end by
        folded = {}
        for grain, width in (("minute", 60), ("hour", 1440)):
            folded[grain] = 0
            for _ in range(MAX_BATCHES):
                n = await self.rows.compact(grain, ready - ready % width, self.batch)
                folded[grain] += n
                if n < self.batch:
                    break
        return folded

    async def prune(self) -> dict[str, int]:
        now = int(self.clock() // 60)
        return {grain: await self.rows.prune(grain, now - self.retention.minutes(grain))
                for grain in ("minute", "hour", "day")}

    async def aclose(self) -> None:
        await self._flusher.aclose()
