"""A circuit breaker per (backend, model) that one caller's bad requests cannot open.

A failed call is evidence against the backend *or* against the request. A backend that cannot
be connected to is down whatever the request said, but a 500 (llama.cpp answers every
``response_format: json_schema`` with one), a 429, a timeout or a dropped answer may be caused
by the request itself. So, in the manner of Envoy's outlier detection, the circuit opens only on
evidence that cannot come from one caller (a caller is an API key, a signed-in user, or — for
anonymous requests — a client address, IPv6 grouped by /64)::

            ┌─────────────────────── any success ─────────────────────────────┐
            ▼                                                                 │
         closed ──(rule 1, 2 or 2b)─► open ──(cooldown)──► half-open ───────┤
                                         ▲                     │ one probe at a time
                                         └─────────────────────┘
                          probe: connect failure, or failed probes from min_callers callers

1. ``consecutive_failures`` connect failures in a row (refused, unreachable, connect timeout),
   from anyone: nothing in a request causes those.
2. Over the last ``window`` seconds, at least ``min_requests`` verdicts, a share of failures of
   at least ``failure_ratio``, and failures from at least ``min_callers`` distinct callers.
2b. A run of failures with no answer between them (no success, no 4xx) lasting at least one
   bucket (``window`` / 10 s), of at least ``min_requests`` failures from at least
   ``min_callers`` callers: the backend stopped answering. Rule 2 alone would wait for the
   failures to outweigh the window's earlier successes — under steady traffic a backend that
   went silent (accepts connections, never answers: every call a timeout) would keep callers
   waiting for 85 % of the window. A run is forgotten once its last failure leaves the window.

A failure is any other reason to fail over: a 5xx, a 401/403/408/429, a timeout after the
connection was made, a dropped or cut-off answer. A success is a 2xx (for a stream: its first
event). Any other 4xx is about the request: it proves the backend alive (it ends a run of
connect failures and frees the half-open probe) and counts for nothing else.

One caller alone never opens the circuit for anybody else. When that caller is the only one
using the backend and the backend is broken (a single-user deployment), rule 3 stands in:

3. A caller whose last ``min_requests`` calls all failed, while nobody's call succeeded within
   the window, is *isolated*: its calls skip this backend for ``cooldown`` seconds (failing
   over, or 503 ``upstream_unavailable``), while other callers' calls still go through. After
   the cooldown its next call goes through; if it fails while nothing succeeds, it is isolated
   again. A second caller whose calls fail too makes rule 2 true and opens the circuit for all.

In half-open a failing probe that was not a connect failure isolates its caller and lets
another caller's call probe, so one caller cannot keep a recovered backend shut either. A probe
that never reports (its client went away) stops blocking after one cooldown.

Memory is bounded: the window keeps ten buckets, each remembering at most ``min_callers``
failing callers, and at most ``MAX_CALLERS`` callers are remembered (the oldest go first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gatehouse.config import UpstreamSettings

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BUCKETS = 10
MAX_CALLERS = 1024


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int
    window: float
    min_requests: int
    failure_ratio: float
    min_callers: int
    cooldown: float

    @classmethod
    def of(cls, up: UpstreamSettings) -> BreakerPolicy:
        """The policy an ``[upstreams.NAME]`` section sets (its defaults are the defaults)."""
        return cls(up.breaker_failures, up.breaker_window, up.breaker_min_requests,
                   up.breaker_failure_ratio, up.breaker_min_callers, up.breaker_cooldown)

    @classmethod
    def never(cls) -> BreakerPolicy:
        """A breaker that never opens (the demo backend's, so its failure_rate stays a rate)."""
        return cls(2**62, 60.0, 2**62, 1.0, 2**62, 30.0)


class _Bucket:
    __slots__ = ("callers", "failed", "ok", "slot")

    def __init__(self) -> None:
        self.callers: set[str] = set()
        self.reset(-1)

    def reset(self, slot: int) -> None:
        self.slot, self.ok, self.failed = slot, 0, 0
        self.callers.clear()


class _Caller:
    __slots__ = ("failures", "isolated_until")

    def __init__(self) -> None:
        self.failures = 0  # this caller's failures in a row
        self.isolated_until = 0.0


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.connect_failures = 0
        self.opened_at = 0.0
        self.probe_started: float | None = None
        self.probe_caller: str | None = None  # whose call is the half-open probe
        self._width = self.policy.window / BUCKETS
        self._buckets = [_Bucket() for _ in range(BUCKETS)]
        self._callers: dict[str, _Caller] = {}
        self._probe_failures: set[str] = set()
        # rule 2b: the current run of failures (since the last answer): when it began, its last
        # failure, how many, and up to min_callers of its callers
        self._run_began = self._run_last = 0.0
        self._run_failures = 0
        self._run_callers: set[str] = set()

    # -- asking --------------------------------------------------------------------------------
    def allow(self, caller: str) -> bool:
        """May this caller's request go to this backend now? In half-open, one probe at a time."""
        now = self.clock()
        if self.isolates(caller, now):
            return False
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now - self.opened_at < self.policy.cooldown:
                return False
            self._set(HALF_OPEN)
        if self.probe_started is not None and now - self.probe_started < self.policy.cooldown:
            return False
        self.probe_started, self.probe_caller = now, caller
        return True

    def isolates(self, caller: str, now: float | None = None) -> bool:
        """Is this caller's traffic held back from this backend (rule 3)?"""
        seen = self._callers.get(caller)
        return seen is not None and (self.clock() if now is None else now) < seen.isolated_until

    def retry_in(self, caller: str | None = None) -> float:
        """Seconds until this caller may try this backend again (0 when it may now)."""
        now = self.clock()
        wait = 0.0 if self.state == CLOSED else self.opened_at + self.policy.cooldown - now
        seen = self._callers.get(caller) if caller is not None else None
        if seen is not None:
            wait = max(wait, seen.isolated_until - now)
        return max(0.0, wait)

    def counts(self) -> tuple[int, int]:
        """Successes and failures within the window."""
        ok, failed, _ = self._totals(self.clock())
        return ok, failed

    # -- telling -------------------------------------------------------------------------------
    def success(self, caller: str) -> None:
        self.connect_failures = 0
        self._end_run()
        self.probe_started = self.probe_caller = None
        self._callers.pop(caller, None)
        if self.state != CLOSED:
            # a fresh start: the failures that opened it no longer count
            self._callers.clear()
            for b in self._buckets:
                b.reset(b.slot)
            self._set(CLOSED)
        self._bucket(self.clock()).ok += 1

    def answered(self, caller: str) -> None:
        """The backend answered about the request (a 4xx it does not fail over on): alive,
        and nothing more."""
        self.connect_failures = 0
        self._end_run()
        self.release(caller)

    def failure(self, caller: str, connect: bool = False) -> None:
        """A reason to fail over; ``connect`` when the backend could not be connected to."""
        now = self.clock()
        bucket = self._bucket(now)
        bucket.failed += 1
        if len(bucket.callers) < self.policy.min_callers:
            bucket.callers.add(caller)
        self.connect_failures = self.connect_failures + 1 if connect else 0
        if not self._run_failures or now - self._run_last > self.policy.window:
            self._end_run()
            self._run_began = now
        self._run_last = now
        self._run_failures += 1
        if len(self._run_callers) < self.policy.min_callers:
            self._run_callers.add(caller)
        seen = self._remember(caller)
        seen.failures += 1
        was_probe = self.probe_started is not None and caller == self.probe_caller
        self.release(caller)
        if self.state == OPEN:
            return
        if self.state == HALF_OPEN:
            if not was_probe:
                return  # not the probe: a call that started before the circuit opened
            self._probe_failures.add(caller)
            if connect or len(self._probe_failures) >= self.policy.min_callers:
                self._open(now)
            else:
                seen.isolated_until = now + self.policy.cooldown
            return
        p = self.policy
        ok, failed, callers = self._totals(now)
        if self.connect_failures >= p.consecutive_failures or (
                ok + failed >= p.min_requests and failed >= p.failure_ratio * (ok + failed)
                and len(callers) >= p.min_callers) or self._silent(now):
            self._open(now)
        elif seen.failures >= p.min_requests and not ok:
            seen.isolated_until = now + p.cooldown

    def release(self, caller: str) -> None:
        """This caller's attempt ended without a verdict (its client went away): if it was the
        half-open probe, free the slot."""
        if caller == self.probe_caller:
            self.probe_started = self.probe_caller = None

    # -- inside --------------------------------------------------------------------------------
    def _silent(self, now: float) -> bool:
        """Rule 2b: a run of failures, nothing answered, for a bucket's time or more."""
        p = self.policy
        return self._run_failures >= p.min_requests and len(self._run_callers) >= p.min_callers \
            and now - self._run_began >= self._width

    def _end_run(self) -> None:
        self._run_failures = 0
        self._run_callers.clear()

    def _totals(self, now: float) -> tuple[int, int, set[str]]:
        current = int(now // self._width)
        ok = failed = 0
        callers: set[str] = set()
        for b in self._buckets:
            if current - BUCKETS < b.slot <= current:
                ok += b.ok
                failed += b.failed
                callers |= b.callers
        return ok, failed, callers

    def _bucket(self, now: float) -> _Bucket:
        slot = int(now // self._width)
        b = self._buckets[slot % BUCKETS]
        if b.slot != slot:
            b.reset(slot)
        return b

    def _remember(self, caller: str) -> _Caller:
        seen = self._callers.get(caller)
        if seen is None:
            if len(self._callers) >= MAX_CALLERS:
                del self._callers[next(iter(self._callers))]
            seen = self._callers[caller] = _Caller()
        return seen

    def _open(self, now: float) -> None:
        self.opened_at = now
        self._probe_failures.clear()
        self._set(OPEN)

    def _set(self, state: str) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
