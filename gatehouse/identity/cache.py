"""Bounded, time-limited caches of key lookups: found keys and refused keys, kept apart so a
flood of refused keys cannot push the real ones out.

An entry is fresh for ``ttl`` seconds; with ``stale`` > 0 it is then kept ``stale`` seconds more,
no longer answered by :meth:`TTLCache.get` but still by :meth:`TTLCache.get_stale` — what a
caller falls back on when the source of truth cannot be asked (the store is down)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
MISS = object()


class TTLCache(Generic[V]):
    """Least-recently-used eviction past ``size`` entries; entries expire after ``ttl`` s and
    are forgotten ``stale`` s later."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic,
                 *, stale: float = 0.0) -> None:
        self.size, self.ttl, self.stale, self._clock = size, ttl, stale, clock
        self._data: OrderedDict[str, tuple[V, float]] = OrderedDict()  # value, fresh until

    def get(self, key: str) -> V | object:
        """The fresh value, or MISS."""
        item = self._data.get(key)
        if item is None:
            return MISS
        now = self._clock()
        if item[1] <= now:
            if item[1] + self.stale <= now:
                del self._data[key]
            return MISS
        self._data.move_to_end(key)
        return item[0]

    def get_stale(self, key: str) -> V | object:
        """The value, fresh or expired less than ``stale`` seconds ago; or MISS."""
        item = self._data.get(key)
        if item is None or item[1] + self.stale <= self._clock():
            return MISS
        return item[0]

    def put(self, key: str, value: V) -> None:
        self._data[key] = (value, self._clock() + self.ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def expire_all(self) -> None:
        """Every entry stops being fresh now (kept as stale for ``stale`` seconds)."""
        now = self._clock()
        for key, (value, until) in list(self._data.items()):
            if until > now:
                self._data[key] = (value, now)

    def drop(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
