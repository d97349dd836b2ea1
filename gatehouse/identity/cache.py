"""Bounded, time-limited caches of key lookups: found keys and refused keys, kept apart so a
flood of refused keys cannot push the real ones out."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
MISS = object()


class TTLCache(Generic[V]):
    """Least-recently-used eviction past ``size`` entries; entries expire after ``ttl`` s."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl, self._clock = size, ttl, clock
        self._data: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def get(self, key: str) -> V | object:
        item = self._data.get(key)
        if item is None:
            return MISS
        if item[1] <= self._clock():
            del self._data[key]
            return MISS
        self._data.move_to_end(key)
        return item[0]

    def put(self, key: str, value: V) -> None:
        self._data[key] = (value, self._clock() + self.ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def drop(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
