"""In-process state: one replica only (several workers of one `serve` do not share it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gatehouse.state.base import Backoff, Handler, lock_seconds


class MemoryState:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float]] = {}
        self._sets: dict[str, tuple[set[str], float]] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._writes = 0
        # attempt counters: key -> [attempts, locked until, last attempt, memory]
        self._backoffs: dict[str, list[float]] = {}

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
            removed += self._backoffs.pop(key, None) is not None
        return removed

    async def attempt(self, counters: Sequence[Backoff], now: float) -> tuple[bool, float]:
        # no await inside: atomic within the process, as the Lua script is in Redis
        wait = 0.0
        for c in counters:
            held = self._backoffs.get(c.key)
            if held is not None:
                wait = max(wait, held[1] - now)
        if wait > 0:
            return False, wait
        self._writes += 1
        if not self._writes % 1024:  # forget counters nobody has tried for their memory
            for key in [k for k, b in self._backoffs.items() if now - b[2] >= b[3]]:
                del self._backoffs[key]
        locked = 0.0
        for c in counters:
            item = self._backoffs.get(c.key)
            if item is None or now - item[2] >= c.memory:
                item = self._backoffs[c.key] = [0, 0.0, now, c.memory]
            item[0] += 1
            item[2] = now
            lock = lock_seconds(int(item[0]), c)
            if lock:
                item[1] = now + lock
                locked = max(locked, lock)
        return True, locked

    async def refund(self, counter: Backoff) -> None:
        item = self._backoffs.get(counter.key)
        if item is not None:
            item[0] -= 1
            if item[0] < 0:
                del self._backoffs[counter.key]
            elif item[0] <= counter.free:
                item[1] = 0.0

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
