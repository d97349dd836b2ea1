"""The in-process limiter: exact for one process (``--workers 1``). The same rules as
reserve.lua, run through the same conformance suite."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatehouse.quota.limiter import Ask, Decision, Settle


@dataclass(slots=True)
class _Counter:
    expires: float
    committed: int = 0
    debt: int | None = None  # carried from the window before; fixed on first reservation
    # rid → (amount, until), in the order made: with one reservation ttl per process that is
    # the order they lapse in, so lapsed ones are taken from the front and ``held`` (their
    # sum) is kept as they come and go. Summing them per request was O(requests in flight):
    # quadratic for a worker with a backlog.
    reserved: dict[str, tuple[int, float]] = field(default_factory=dict)
    held: int = 0

    def hold(self, rid: str, amount: int, until: float) -> None:
        self.release(rid)
        self.reserved[rid] = (amount, until)
        self.held += amount

    def release(self, rid: str) -> None:
        gone = self.reserved.pop(rid, None)
        if gone is not None:
            self.held -= gone[0]

    def used(self, now: float) -> int:
        reserved = self.reserved
        while reserved:  # lapsed reservations (a settle that never came): front first
            rid = next(iter(reserved))
            amount, until = reserved[rid]
            if until > now:
                break
            del reserved[rid]
            self.held -= amount
        return (self.debt or 0) + self.committed + self.held


class MemoryLimiter:
    name = "memory"

    def __init__(self) -> None:
        self.round_trips: dict[str, int] = {}  # in process: none
        self._counters: dict[str, _Counter] = {}
        self._calls = 0

    def _get(self, key: str, expires: float, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None or counter.expires + 60 <= now:
            counter = self._counters[key] = _Counter(expires)
        return counter

    def _with_debt(self, ask: Ask, now: float) -> _Counter:
        counter = self._get(ask.key, ask.expires, now)
        if counter.debt is None:
            before = self._counters.get(ask.previous) if ask.previous else None
            counter.debt = 0 if before is None else max(
                0, before.committed + (before.debt or 0) - ask.limit)
        return counter

    def _sweep(self, now: float) -> None:
        self._calls += 1
        if self._calls % 4096 == 0:  # a counter is kept a minute past its window, as in Redis
            for key in [k for k, c in self._counters.items() if c.expires + 60 <= now]:
                del self._counters[key]

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float) -> Decision:
        self._sweep(now)
        counters = [self._with_debt(a, now) for a in asks]
        used = tuple(c.used(now) for c in counters)
        for i, (ask, before) in enumerate(zip(asks, used, strict=True)):
            if ask.amount > 0 and before + ask.amount > ask.limit:
                return Decision(False, used, i)
        for ask, counter in zip(asks, counters, strict=True):
            if ask.amount > 0:
                counter.hold(rid, ask.amount, now + ttl)
        return Decision(True, used, None)

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None:
        for s in settles:
            counter = self._counters.get(s.key)
            if counter is not None:
                counter.release(rid)
            if s.actual > 0:
                target = self._get(s.commit_key, s.commit_expires, now) if s.commit_key \
                    else self._get(s.key, s.expires, now)
                target.committed += s.actual

    async def prepare(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def usage(self, asks: list[Ask], now: float) -> list[int]:
        return [self._with_debt(a, now).used(now) for a in asks]

    async def aclose(self) -> None:
        self._counters.clear()
