"""The in-process limiter: exact for one process (``--workers 1``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatehouse.quota.limiter import Ask, Decision, Settle


@dataclass(slots=True)
class _Counter:
    expires: float
    committed: int = 0
    reserved: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid → (amount, until)

    def used(self, now: float) -> int:
        stale = [rid for rid, (_, until) in self.reserved.items() if until <= now]
        for rid in stale:
            del self.reserved[rid]
        return self.committed + sum(amount for amount, _ in self.reserved.values())


class MemoryLimiter:
    name = "memory"

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        self._calls = 0

    def _get(self, key: str, expires: float, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None or counter.expires <= now:
            counter = self._counters[key] = _Counter(expires)
        return counter

    def _sweep(self, now: float) -> None:
        self._calls += 1
        if self._calls % 4096 == 0:
            for key in [k for k, c in self._counters.items() if c.expires <= now]:
                del self._counters[key]

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float) -> Decision:
        self._sweep(now)
        counters = [self._get(a.key, a.expires, now) for a in asks]
        used = tuple(c.used(now) for c in counters)
        for i, (ask, before) in enumerate(zip(asks, used, strict=True)):
            if ask.amount > 0 and before + ask.amount > ask.limit:
                return Decision(False, used, i)
        for ask, counter in zip(asks, counters, strict=True):
            if ask.amount > 0:
                counter.reserved[rid] = (ask.amount, now + ttl)
        return Decision(True, used, None)

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None:
        for s in settles:
            counter = self._get(s.key, s.expires, now)
            counter.reserved.pop(rid, None)
            counter.committed += s.actual

    async def ping(self) -> None:
        return None

    async def usage(self, keys: list[str], now: float) -> list[int]:
        out = []
        for key in keys:
            counter = self._counters.get(key)
            out.append(0 if counter is None or counter.expires <= now else counter.used(now))
        return out

    async def aclose(self) -> None:
        self._counters.clear()
