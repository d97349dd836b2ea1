"""A circuit breaker per backend.

closed ──(N consecutive failures)──► open ──(cooldown passes)──► half-open
   ▲                                   ▲                            │ one probe request
   └────────────(probe succeeds)───────┼────────────────────────────┤
                                       └──────(probe fails)─────────┘

A probe that never reports (its client went away) stops blocking after one cooldown."""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, failures: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probe_started: float | None = None

    def allow(self) -> bool:
        """May a request go to this backend now? In half-open, only one probe at a time."""
        if self.state == CLOSED:
            return True
        now = self.clock()
        if self.state == OPEN:
            if now - self.opened_at < self.cooldown:
                return False
            self._set(HALF_OPEN)
        if self.probe_started is not None and now - self.probe_started < self.cooldown:
            return False
        self.probe_started = now
        return True

    def success(self) -> None:
        self.failures = 0
        self.probe_started = None
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self) -> None:
        self.failures += 1
        self.probe_started = None
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.opened_at = self.clock()
            self._set(OPEN)

    def release(self) -> None:
        """The attempt ended without a verdict (client went away): free the probe slot."""
        self.probe_started = None

    def retry_in(self) -> float:
        """Seconds until this backend may be tried again (0 when it may be tried now)."""
        if self.state == CLOSED:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def _set(self, state: str) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
