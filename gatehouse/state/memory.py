"""In-process state: one replica only (several workers of one `serve` do not share it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from gatehouse.state.base import Handler


class MemoryState:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float]] = {}
        self._sets: dict[str, tuple[set[str], float]] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._writes = 0

    def _sweep(self) -> None:
        # expired entries go on reads too; this bounds memory when keys are never read again
        self._writes += 1
        if self._writes % 1024:
            return
        now = self._clock()
        for store in (self._values, self._sets):
            for key in [k for k, (_, exp) in store.items() if exp <= now]:
                del store[key]

    async def get(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._values[key]
            return None
        return item[0]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._sweep()
        self._values[key] = (value, self._clock() + ttl)

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, value, ttl)
        return True

    async def delete(self, *keys: str) -> int:
        now = self._clock()
        removed = 0
        for key in keys:
            for store in (self._values, self._sets):
                item = store.pop(key, None)
                removed += item is not None and item[1] > now
        return removed

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        self._sweep()
        members = await self.set_members(key)
        members.add(member)
        current = self._sets.get(key)
        expires = self._clock() + ttl
        self._sets[key] = (members, max(expires, current[1]) if current else expires)

    async def set_remove(self, key: str, member: str) -> None:
        item = self._sets.get(key)
        if item is not None:
            item[0].discard(member)

    async def set_members(self, key: str) -> set[str]:
        item = self._sets.get(key)
        if item is None:
            return set()
        if item[1] <= self._clock():
            del self._sets[key]
            return set()
        return set(item[0])

    async def publish(self, channel: str, message: bytes) -> None:
        for handler in self._handlers.get(channel, ()):
            handler(message)

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._handlers.clear()
