"""The request log: every RequestRecord handed to a bounded buffer on the request path, and
written to the store in batches every second by the :class:`Flusher`, off it.

Nothing here blocks or waits on the store: ``add`` is a few comparisons and an append. What
is not written is counted, never silently lost:

- ``buffer_full`` — the writer fell ``[telemetry] request_log_buffer`` records behind (a store
  that is slow or down); further records are dropped until it catches up;
- ``store_error`` — a record the store refused (it answered, and said no: a constraint, bad
  data). A refused batch is written again one record at a time, so only the records the
  store refuses are lost, not the others in their batch. A store that cannot be reached
  refuses nothing: the batch goes back to the front of the buffer and is written once the
  store is back (meanwhile, past the buffer's size, new records count as ``buffer_full``);
- sampled — above ``request_log_sample_above`` records a second (per worker), successes are
  kept 1 in ``SAMPLE_EVERY``; errors (status ≥ 400) are always kept.

The counts are Prometheus counters (``gatehouse_request_log_{written,sampled,dropped}_total``)
and each flush that dropped something says so in the log.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from gatehouse.errors import IdentityUnavailable
from gatehouse.store.db import refused
from gatehouse.store.flusher import Flusher
from gatehouse.store.requests import RequestRows
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.record import RequestRecord

log = logging.getLogger("gatehouse.telemetry")
FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 3600.0
BATCH = 2000
SAMPLE_EVERY = 10


class RequestLog:
    def __init__(self, rows: RequestRows, metrics: Metrics, *, size: int, keep_days: float,
                 sample_above: float, clock: Callable[[], float] = time.monotonic,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self.rows = rows
        self.metrics = metrics
        self.size = size
        self.keep_seconds = keep_days * 86400
        self.sample_above = sample_above
        self.clock = clock
        self.buffer: list[RequestRecord] = []
        self._writing: list[RequestRecord] = []  # the batch being written: still findable
        self._second = 0
        self._in_second = 0
        self._over = 0
        # counted here on the request path, reported to Prometheus at each flush
        self.sampled = self.dropped = self.written = 0
        self._reported = (0, 0)
        self._flusher = Flusher(self.flush, flush_seconds)
        self._pruned = 0.0
        self._down = False  # the last write could not reach the store

    def add(self, record: RequestRecord) -> None:
        second = int(self.clock())
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        if self._in_second > self.sample_above and record.status < 400:
            self._over += 1
            if self._over % SAMPLE_EVERY:
                self.sampled += 1
                return
        if len(self.buffer) >= self.size:
            self.dropped += 1
            return
        self.buffer.append(record)

    async def find(self, any_id: str, *, org: str | None = None,
                   user: str | None = None) -> list[RequestRecord]:
        """Records with this request id, client request id or Ray ID (newest first), those
        not written yet included; with ``org`` / ``user``, only that org's / user's."""
        waiting = [r for r in reversed(self._writing + self.buffer)
                   if any_id in (r.request_id, r.client_request_id, r.ray_id)
                   and (org is None or r.org == org) and (user is None or r.user_id == user)]
        try:
            stored = await self.rows.find(any_id, org=org, user=user)
        except Exception as exc:
            if refused(exc):
                raise
            # the store cannot be reached: what waits here is all there is
            if waiting:
                return waiting
            raise IdentityUnavailable("The store cannot be reached right now, so the request "
                                      "log cannot be searched; try again shortly.",
                                      retry_after=5) from None
        seen = {r.request_id for r in waiting}
        return waiting + [r for r in stored if r.request_id not in seen]

    async def start(self) -> None:
        self._flusher.start()

    async def flush(self) -> None:
        """Write what is waiting now, in batches of ``BATCH`` — and only that: records that
        arrive meanwhile wait for the next flush. (Chasing them wrote a handful of rows per
        transaction, a hundred commits a second at 500 req/s: the writer thread then cost
        ~200 µs of CPU per request.)"""
        waiting, self.buffer = self.buffer, []
        self._writing = waiting  # still findable while it is written
        started = time.perf_counter()
        try:
            for start in range(0, len(waiting), BATCH):
                batch = waiting[start:start + BATCH]
                try:
                    await self.rows.add(batch)
                    written = len(batch)
                except Exception as exc:
                    if not refused(exc):  # not reachable: keep them for the next flush
                        self._wait(waiting[start:], exc)
                        break
                    # one record the store cannot take must not cost the others theirs
                    written, unsent = await self._one_by_one(batch)
                    if unsent:  # the store went away meanwhile
                        self.buffer[:0] = [*unsent, *waiting[start + BATCH:]]
                        break
                if self._down:
                    self._down = False
                    log.warning("request log: the store is back; writing what waited")
                self.written += written
                self.metrics.request_log_written.inc(written)
        finally:
            self._writing = []
        if waiting:
            self.metrics.request_log_flush.observe(time.perf_counter() - started)
        self._report()
        if time.time() - self._pruned > PRUNE_SECONDS:
            self._pruned = time.time()
            with contextlib.suppress(Exception):
                await self.rows.prune(time.time() - self.keep_seconds)

    def _wait(self, records: list[RequestRecord], exc: BaseException) -> None:
        """The store could not be reached: these go back to the front of the buffer."""
        self.buffer[:0] = records
        if not self._down:
            self._down = True
            log.warning("request log: the store cannot be reached (%s); %d records wait for "
                        "it", type(exc).__name__, len(self.buffer))

    async def _one_by_one(self, batch: list[RequestRecord]) -> tuple[int, list[RequestRecord]]:
        """A batch the store refused, written again a record at a time (at most ``BATCH``
        statements, only after a refusal): the records it refuses again are dropped and
        counted as ``store_error``. (How many were written, the records not sent because the
        store went away meanwhile.)"""
        written = bad = 0
        unsent: list[RequestRecord] = []
        for i, record in enumerate(batch):
            try:
                await self.rows.add([record])
                written += 1
            except Exception as exc:
                if not refused(exc):
                    unsent = batch[i:]
                    break
                bad += 1
        if bad:
            self.metrics.request_log_dropped.labels("store_error").inc(bad)
            log.warning("request log: the store refused %d records; the %d others of their "
                        "batch were written", bad, written)
        return written, unsent

    def _report(self) -> None:
        sampled, dropped = self.sampled, self.dropped
        last_sampled, last_dropped = self._reported
        if sampled > last_sampled:
            self.metrics.request_log_sampled.inc(sampled - last_sampled)
        if dropped > last_dropped:
            self.metrics.request_log_dropped.labels("buffer_full").inc(dropped - last_dropped)
            log.warning("request log: %d records dropped, the buffer of %d was full",
                        dropped - last_dropped, self.size)
        self._reported = (sampled, dropped)

    async def aclose(self) -> None:
        await self._flusher.aclose()
