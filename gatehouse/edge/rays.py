"""Ray IDs: one per blocked or challenged answer, kept so support can find what happened.

Events are buffered in memory and written to the store in batches every second, off the
request path. The buffer is bounded (``[edge] rays_buffer``): under a flood beyond what the
store takes, further events are dropped and counted (``gatehouse_edge_rays_dropped_total``)
rather than slowing the answers down. Events older than ``rays_keep_days`` are deleted.

One address's events are stored one by one only up to ``rays_per_address`` per
``SAMPLE_SECONDS`` (per replica): a person who quotes a Ray ID has seen a handful of pages, while
a client hammering a block would otherwise have every one of its thousands of denials a second
written to the database — a write that costs the worker more than the denial itself. The rest
are counted as dropped; their Ray IDs are still in the answers and the access log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from gatehouse.edge.visitor import Visitor
from gatehouse.store.edge import RAY_FIELDS, EdgeRecords
from gatehouse.store.flusher import Flusher

log = logging.getLogger("gatehouse.edge")
FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 3600.0
BATCH = 2000
SAMPLE_SECONDS = 10.0


# a Ray ID as people quote it (new_ray makes lower case; lookups lower it)
RAY_PATTERN = r"^[0-9a-fA-F]{16}$"


def new_ray() -> str:
    """16 lowercase hex digits, random (not derived from anything about the request)."""
    return os.urandom(8).hex()


class RayLog:
    def __init__(self, records: EdgeRecords, *, size: int, keep_days: float,
                 per_address: int = 20, on_drop: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.records = records
        self.size = size
        self.per_address = per_address
        self.clock = clock
        self._window_end = 0.0
        self._seen: dict[int, int] = {}
        self.keep_seconds = keep_days * 86400
        self.buffer: list[tuple[Any, ...]] = []  # in RAY_FIELDS order, made strings later
        self._writing: list[tuple[Any, ...]] = []  # the flush in progress: still findable
        self.dropped = 0
        self._on_drop = on_drop
        self._flusher = Flusher(self.flush, FLUSH_SECONDS)
        self._pruned = 0.0

    def record(self, ray: str, action: str, visitor: Visitor, rule: str, reason: str) -> None:
        now = self.clock()
        if now >= self._window_end:
            self._seen = {}
            self._window_end = now + SAMPLE_SECONDS
        address = int(visitor.ip)  # an int hashes at C speed; an address object does not
        seen = self._seen.get(address, 0) + 1
        self._seen[address] = seen
        if seen > self.per_address or len(self.buffer) >= self.size:
            self._drop(1)
            return
        self.buffer.append((ray, time.time(), action, visitor.ip, visitor.network, rule, reason,
                            visitor.method, visitor.path, visitor.headers.get("user-agent", "")))

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    async def find(self, ray: str) -> dict[str, Any] | None:
        for event in (*self._writing, *self.buffer):  # not written yet
            if event[0] == ray:
                return {k: str(v) if k == "ip" else v for k, v in zip(RAY_FIELDS, event,
                                                                       strict=True)}
        return await self.records.ray(ray)

    async def start(self) -> None:
        self._flusher.start()

    async def flush(self) -> None:
        # what waits now, and only that: events arriving meanwhile go in the next flush (a
        # flood of denials would otherwise be written a few rows per transaction, non-stop)
        waiting, self.buffer = self.buffer, []
        self._writing = waiting
        try:
            for start in range(0, len(waiting), BATCH):
                try:
                    await self.records.add_rays(waiting[start:start + BATCH])
                except Exception as exc:  # advisory: never fail requests over it; count it
                    self._drop(len(waiting) - start)
                    log.warning("could not write %d ray events: %s", len(waiting) - start,
                                type(exc).__name__)
                    return
        finally:
            self._writing = []
        if time.time() - self._pruned > PRUNE_SECONDS:
            self._pruned = time.time()
            with contextlib.suppress(Exception):
                await self.records.prune_rays(time.time() - self.keep_seconds)

    async def aclose(self) -> None:
        await self._flusher.aclose()
