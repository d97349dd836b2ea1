"""A capacity gate for one model: at most ``limit`` requests run at once; the rest wait in
per-class queues, and leave with a fast, honest "at capacity" when they cannot start in time.

    classes, best first: high ─► normal ─► low
    a freed slot goes to the best class that has someone waiting (a share of the capacity,
    ``reserved``, only the top class may use); inside a class, orgs take turns
    (round robin), so one org's flood cannot starve the others;
    each waiter has its class's deadline; a full queue refuses at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

CLASSES = ("high", "normal", "low")
WARM = 20


class Shed(Exception):
    """Could not start in time (``reason``: ``queue_full``, ``wait_too_long`` — the expected
    wait is past the class's deadline — or ``deadline``)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(slots=True)
class _Class:
    deadline: float
    max_queue: int
    orgs: OrderedDict[str, deque[asyncio.Future[None]]] = field(default_factory=OrderedDict)
    waiting: int = 0


class Gate:
    def __init__(self, limit: int, *, reserved: float, classes: dict[str, tuple[float, int]]
                 ) -> None:
        self.limit = limit
        # slots the lower classes may fill; the rest is kept for the top class
        self.shared = max(1, limit - math.floor(limit * reserved)) if limit > 1 else limit
        self.classes = {name: _Class(*classes[name]) for name in CLASSES}
        self.running = 0
        self.running_low = 0  # running requests of the classes below the top
        self._service = 1.0  # EWMA of seconds a slot is held
        self._released = 0  # slots given back so far: the service-time average is warm after WARM

    def resize(self, limit: int, reserved: float) -> None:
        """A new limit (the adaptive limiter's); more room lets waiters in at once."""
        self.limit = limit
        self.shared = max(1, limit - math.floor(limit * reserved)) if limit > 1 else limit
        self._grant()

    def _fits(self, cls: str) -> bool:
        if self.running >= self.limit:
            return False
        return cls == CLASSES[0] or self.running_low < self.shared

    def queued(self, cls: str) -> int:
        return self.classes[cls].waiting

    def expected_wait(self, cls: str) -> float:
        """Seconds a request of ``cls`` arriving now may expect to wait: those ahead of it
        (its class and the better ones) drained at the rate slots are freed."""
        ahead = sum(self.classes[c].waiting for c in CLASSES[:CLASSES.index(cls) + 1])
        return (ahead + 1) * self._service / max(1, self.limit)

    def retry_after(self) -> float:
        """Seconds until a retry is likely to start: the queue ahead drained at the rate
        slots are freed."""
        ahead = sum(c.waiting for c in self.classes.values()) + 1
        return min(60.0, max(1.0, ahead * self._service / max(1, self.limit)))

    async def acquire(self, cls: str, org: str) -> float:
        """Wait for a slot; returns the seconds waited, or raises :class:`Shed`."""
        ahead = CLASSES[:CLASSES.index(cls) + 1]  # this class and the better ones
        if not any(self.classes[c].waiting for c in ahead) and self._fits(cls):
            self._take(cls)
            return 0.0
        q = self.classes[cls]
        if q.waiting >= q.max_queue:
            raise Shed("queue_full", self.retry_after())
        if self._released >= WARM and self.expected_wait(cls) > q.deadline:
            # it would only wait out its deadline and then be refused: refuse now, cheaply
            raise Shed("wait_too_long", self.retry_after())
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q.orgs.setdefault(org, deque()).append(waiter)
        q.waiting += 1
        self._grant()  # room may be free for this class while worse classes wait
        start = time.monotonic()
        try:
            async with asyncio.timeout(q.deadline):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return time.monotonic() - start  # granted as the deadline passed: go ahead
            self._forget(q, org, waiter)
            raise Shed("deadline", self.retry_after()) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(cls, time.monotonic())  # granted as the client left: give back
            else:
                self._forget(q, org, waiter)
            raise
        return time.monotonic() - start

    def _forget(self, q: _Class, org: str, waiter: asyncio.Future[None]) -> None:
        line = q.orgs.get(org)
        if line is not None and waiter in line:
            line.remove(waiter)
            q.waiting -= 1
            if not line:
                del q.orgs[org]

    def _take(self, cls: str) -> None:
        self.running += 1
        if cls != CLASSES[0]:
            self.running_low += 1

    def release(self, cls: str, started: float) -> None:
        self.running -= 1
        if cls != CLASSES[0]:
            self.running_low -= 1
        self._service += 0.1 * (max(0.0, time.monotonic() - started) - self._service)
        self._released += 1
        self._grant()

    def _grant(self) -> None:
        for name in CLASSES:
            q = self.classes[name]
            while q.waiting and self._fits(name):
                org, line = next(iter(q.orgs.items()))
                waiter = line.popleft()
                q.waiting -= 1
                del q.orgs[org]
                if line:
                    q.orgs[org] = line  # to the back: the next org goes first next time
                if waiter.done():  # timed out or cancelled, not yet forgotten
                    continue
                self._take(name)
                waiter.set_result(None)
