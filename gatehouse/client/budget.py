"""The retry budget: retries at most ``ratio`` of requests over a sliding window.

Google's SRE book ("Handling Overload") caps client-side retries at 10 % of requests, so that a
backend already failing is never sent more than 1.1x its normal load by the clients' retries:
without a budget, 3 attempts per request triple the load on a service that is already down.

``try_spend`` allows a retry while ``retries + 1 <= max(minimum, ratio × requests)`` over the last
``window`` seconds. The ``minimum`` lets a quiet client still retry an isolated failure; above
``minimum / ratio`` requests per window it no longer adds anything, so a sustained storm stays
within ``1 + ratio`` attempts per request.

One budget is shared by every request of a client. Its lock guards a few arithmetic steps with
no I/O, so it is safe across threads (the sync client) and never blocks an event loop for long
(the async client; tasks cannot interleave inside it as it never awaits).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RetryBudget:
    def __init__(self, ratio: float = 0.1, minimum: int = 10, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, buckets: int = 10) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.window = window
        self._clock = clock
        self._width = window / buckets
        # [bucket index, requests, retries], oldest first: memory bounded by ``buckets``
        self._buckets: deque[list[int]] = deque()
        self._lock = threading.Lock()

    def record_request(self) -> None:
        """Count one new request (not its retries)."""
        with self._lock:
            self._current()[1] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget if it has one; ``False`` means do not retry."""
        with self._lock:
            current = self._current()
            requests = sum(b[1] for b in self._buckets)
            retries = sum(b[2] for b in self._buckets)
            if retries + 1 > max(self.minimum, self.ratio * requests):
                return False
            current[2] += 1
            return True

    def counts(self) -> tuple[int, int]:
        """(requests, retries) in the window now."""
        with self._lock:
            self._current()
            return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def _current(self) -> list[int]:
        index = int(self._clock() // self._width)
        horizon = index - round(self.window / self._width)
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        return self._buckets[-1]
