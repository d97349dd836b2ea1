"""A capacity gate for one model: at most ``limit`` requests run at once; the rest wait in
per-class queues, and leave with a fast, honest "at capacity" when they cannot start in time.

    classes, best first: high ─► normal ─► low
    a freed slot goes to the best class that has someone waiting; a share of the capacity
    (``reserved``) — and always one free slot — is kept for the top class while it is
    about; inside a class, orgs take
    turns (round robin), so one org's flood cannot starve the others;
    each waiter has its class's deadline; a full queue — or an expected wait already past the
    deadline — refuses at once.

Time is the event loop's clock (``loop.time()``), so tests can drive it (``looptime``).
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

CLASSES = ("high", "normal", "low")
WARM = 20  # slots given back before the measured service time is trusted
RATE_WINDOW = 2.0  # seconds: time constant of the arrival-rate averages
# queue only when the expected wait is within this share of the deadline: the estimate is an
# average, and a queue kept at the deadline's edge would see half its waiters time out
MARGIN = 0.5
# better classes' arrival rate is an average of a noisy count (±7 % at 100/s over 2 s): count
# it 20 % high, so that a class whose betters fill about the whole capacity is refused rather
# than let in on a low reading to wait out its deadline
BETTER_SAFETY = 1.2


class Shed(Exception):
    """Could not start in time (``reason``: ``queue_full``, ``wait_too_long`` — the expected
    wait is past the class's deadline — or ``deadline``)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Rate:
    """Events per second: the higher of two exponential averages, over ``RATE_WINDOW`` and
    over a tenth of it — steady from the long one, yet a sudden surge shows within moments."""

    __slots__ = ("_at", "_fast", "_slow")

    def __init__(self) -> None:
        self._slow = self._fast = 0.0  # decayed event counts
        self._at = 0.0

    def add(self, now: float) -> None:
        dt = now - self._at
        self._slow = self._slow * math.exp(-dt / RATE_WINDOW) + 1.0
        self._fast = self._fast * math.exp(-dt * 10 / RATE_WINDOW) + 1.0
        self._at = now

    def per_second(self, now: float) -> float:
        dt = now - self._at
        return max(self._slow * math.exp(-dt / RATE_WINDOW) / RATE_WINDOW,
                   self._fast * math.exp(-dt * 10 / RATE_WINDOW) * 10 / RATE_WINDOW)


@dataclass(slots=True)
class _Class:
    deadline: float
    max_queue: int
    orgs: OrderedDict[str, deque[asyncio.Future[None]]] = field(default_factory=OrderedDict)
    waiting: int = 0
    arrivals: Rate = field(default_factory=Rate)  # requests that started or queued


def _now() -> float:
    return asyncio.get_running_loop().time()


class Gate:
    def __init__(self, limit: int, *, reserved: float, classes: dict[str, tuple[float, int]]
                 ) -> None:
        self.classes = {name: _Class(*classes[name]) for name in CLASSES}
        self.running = 0
        self.running_low = 0  # running requests of the classes below the top
        self._service = 1.0  # EWMA of seconds a slot is held
        self._released = 0  # slots given back so far: the service-time average is warm after WARM
        self.resize(limit, reserved)

    def resize(self, limit: int, reserved: float) -> None:
        """A new limit (the adaptive limiter's); more room lets waiters in at once."""
        self.limit = limit
        self.reserved = math.floor(limit * reserved) if limit > 1 else 0
        self._grant()

    @staticmethod
    def now() -> float:
        return _now()

    def _kept_for_top(self, now: float) -> int:
        """Slots the lower classes leave free: the reserved share while the top class is
        about — at most twice its expected concurrency (arrival rate × time a slot is held,
        Little's law) — so when no top-class traffic comes, the whole capacity serves the
        rest."""
        if not self.reserved:
            return 0
        if self.classes[CLASSES[0]].waiting:
            return self.reserved
        expected = self.classes[CLASSES[0]].arrivals.per_second(now) * self._service
        # (less a tenth of a slot, so that a long-gone burst's fading average lends it all)
        return min(self.reserved, max(0, math.ceil(2 * expected - 0.1)))

    def _fits(self, cls: str, now: float) -> bool:
        if self.running >= self.limit:
            return False
        if cls == CLASSES[0]:
            return True
        kept = self._kept_for_top(now)
        if kept and self.limit - self.running <= 1:
            # and, while the top class is about, its next request finds a free slot at once
            # rather than waiting for one to be given back (with answers of equal length,
            # slots are given back in bursts, and a wait for the next one can be long)
            return False
        return self.running_low < max(1, self.limit - kept)

    def queued(self, cls: str) -> int:
        return self.classes[cls].waiting

    def expected_wait(self, cls: str, now: float) -> float:
        """Seconds a request of ``cls`` arriving now may expect to wait: those ahead of it
        (waiting in its class and the better ones) drained at the rate slots are freed, less
        the rate at which better classes keep arriving — they go first, so a class whose
        betters alone fill the capacity never starts (infinity)."""
        rank = CLASSES.index(cls)
        ahead = sum(self.classes[c].waiting for c in CLASSES[:rank + 1]) + 1
        drain = max(1, self.limit) / self._service
        drain -= BETTER_SAFETY * sum(self.classes[c].arrivals.per_second(now)
                                     for c in CLASSES[:rank])
        return math.inf if drain <= 0 else ahead / drain

    def retry_after(self) -> float:
        """Seconds until a retry is likely to start: the queue ahead drained at the rate
        slots are freed."""
        ahead = sum(c.waiting for c in self.classes.values()) + 1
        return min(60.0, max(1.0, ahead * self._service / max(1, self.limit)))

    async def acquire(self, cls: str, org: str) -> float:
        """Wait for a slot; returns the seconds waited, or raises :class:`Shed`."""
        now = _now()
        q = self.classes[cls]
        ahead = CLASSES[:CLASSES.index(cls) + 1]  # this class and the better ones
        if not any(self.classes[c].waiting for c in ahead) and self._fits(cls, now):
            q.arrivals.add(now)
            self._take(cls)
            return 0.0
        if q.waiting >= q.max_queue:
            raise Shed("queue_full", self.retry_after())
        if self._released >= WARM and self.expected_wait(cls, now) > q.deadline * MARGIN:
            # it would likely wait out its deadline and then be refused: refuse now, cheaply
            raise Shed("wait_too_long", self.retry_after())
        q.arrivals.add(now)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q.orgs.setdefault(org, deque()).append(waiter)
        q.waiting += 1
        self._grant()  # room may be free for this class while worse classes wait
        try:
            async with asyncio.timeout(q.deadline):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return _now() - now  # granted as the deadline passed: go ahead
            self._forget(q, org, waiter)
            raise Shed("deadline", self.retry_after()) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(cls, _now())  # granted as the client left: give back
            else:
                self._forget(q, org, waiter)
            raise
        return _now() - now

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
        """Give back a slot taken at ``started`` (the gate's clock, :meth:`now`)."""
        self.running -= 1
        if cls != CLASSES[0]:
            self.running_low -= 1
        self._service += 0.1 * (max(0.0, _now() - started) - self._service)
        self._released += 1
        self._grant()

    def _grant(self) -> None:
        if not any(q.waiting for q in self.classes.values()):
            return
        now = _now()
        for name in CLASSES:
            q = self.classes[name]
            while q.waiting and self._fits(name, now):
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
