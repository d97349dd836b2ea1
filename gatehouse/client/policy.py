"""The retry policy: whether to try a request again, and how long to wait first. Pure decisions.

==========================  =======================================================
what came back              retried?
==========================  =======================================================
``x-should-retry: true``    yes — the server's word wins over the rows below
``x-should-retry: false``   never
500, 502, 504               yes, exponential backoff with full jitter
503 (any code)              yes, and never sooner than its ``Retry-After``
429 ``rate_limit_exceeded`` only after ``Retry-After`` / ``retry-after-ms``, and only
                            if that is at most ``max_wait``; without one, never
429 ``insufficient_quota``  never (retrying cannot help until the budget resets)
401, 403 (1020, challenge), never (retrying unchanged fails the same way)
400, 404, 409, 413, 422, …
other 5xx (501, 505, …)     never
connect error / timeout     yes (nothing reached the server)
read error / timeout        yes — like the official SDK, even for a POST whose body was
                            sent; ``retry_after_send=False`` turns that off
==========================  =======================================================

Every retried answer waits ``max(full jitter, Retry-After)``; one whose ``Retry-After`` is
longer than ``max_wait`` is returned instead (the caller decides whether to wait that long).
Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
``sleep = random(0, min(cap, base · 2^retry))``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import httpx

from gatehouse.client.outcome import Answer, Outcome


class Rule(Enum):
    NEVER = "never"
    BACKOFF = "backoff"  # full jitter, at least Retry-After when given
    AFTER_RETRY_AFTER = "after_retry_after"  # only when the server said when


RULES: dict[Outcome, Rule] = {
    Outcome.OK: Rule.NEVER,
    Outcome.UNAUTHORIZED: Rule.NEVER,
    Outcome.ACCESS_DENIED: Rule.NEVER,
    Outcome.CHALLENGE: Rule.NEVER,
    Outcome.PERMISSION_DENIED: Rule.NEVER,
    Outcome.CLIENT_ERROR: Rule.NEVER,
    Outcome.QUOTA_EXCEEDED: Rule.NEVER,
    Outcome.RATE_LIMITED: Rule.AFTER_RETRY_AFTER,
    Outcome.AT_CAPACITY: Rule.BACKOFF,
    Outcome.UPSTREAM_UNAVAILABLE: Rule.BACKOFF,
    Outcome.TIMEOUT: Rule.BACKOFF,
    Outcome.SERVER_ERROR: Rule.BACKOFF,
}
RETRYABLE_5XX = frozenset({500, 502, 503, 504})

# nothing reached the server: always safe to send again
BEFORE_SEND: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout,
                                            httpx.PoolTimeout)
# the request may have been received (and a POST acted on) before the answer was lost
AFTER_SEND: tuple[type[Exception], ...] = (httpx.ReadError, httpx.ReadTimeout, httpx.WriteError,
                                           httpx.WriteTimeout, httpx.RemoteProtocolError)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    wait: float = 0.0  # seconds before the next attempt
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long. ``retry`` counts from 0 (the first retry)."""

    max_retries: int = 2
    base: float = 0.5  # seconds: the first retry waits random(0, base)
    cap: float = 8.0  # the backoff ceiling
    max_wait: float = 60.0  # the longest Retry-After honoured; longer answers are returned
    retry_after_send: bool = True  # retry a lost answer to a non-idempotent request

    def backoff(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        return float(rng() * min(self.cap, self.base * 2.0 ** retry))

    def on_answer(self, retry: int, answer: Answer,
                  rng: Callable[[], float] = random.random) -> Decision:
        """Decide on an HTTP answer; ``retry`` retries were made before it."""
        if answer.should_retry is False:
            return Decision(False, reason="x-should-retry: false")
        if answer.should_retry is True:
            rule, reason = Rule.BACKOFF, "x-should-retry: true"
        else:
            rule, reason = RULES[answer.outcome], f"{answer.status} {answer.outcome}"
            if answer.outcome is Outcome.SERVER_ERROR and answer.status not in RETRYABLE_5XX:
                rule = Rule.NEVER
        if rule is Rule.NEVER:
            return Decision(False, reason=reason)
        if retry >= self.max_retries:
            return Decision(False, reason=f"{reason}; {self.max_retries} retries made")
        after = answer.retry_after
        if rule is Rule.AFTER_RETRY_AFTER and after is None:
            return Decision(False, reason=f"{reason} without Retry-After")
        if after is not None and after > self.max_wait:
            return Decision(False, reason=f"{reason}; Retry-After {after:g}s > {self.max_wait:g}s")
        wait = self.backoff(retry, rng)
        return Decision(True, max(wait, after or 0.0), reason)

    def on_error(self, retry: int, error: Exception, method: str,
                 rng: Callable[[], float] = random.random) -> Decision:
        """Decide on an exception raised instead of an answer."""
        reason = type(error).__name__
        if isinstance(error, BEFORE_SEND):
            pass
        elif isinstance(error, AFTER_SEND):
            if not self.retry_after_send and method.upper() not in IDEMPOTENT:
                return Decision(False, reason=f"{reason} after a {method} was sent")
        else:
            return Decision(False, reason=reason)
        if retry >= self.max_retries:
            return Decision(False, reason=f"{reason}; {self.max_retries} retries made")
        return Decision(True, self.backoff(retry, rng), reason)
