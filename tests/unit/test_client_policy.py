"""The retry policy's decisions and the retry budget's arithmetic, without a network."""

from __future__ import annotations

import httpx
import pytest

from gatehouse.client import Answer, Outcome, RetryBudget, RetryPolicy

POLICY = RetryPolicy(max_retries=3, base=0.5, cap=2.0, max_wait=60)


def top(_: object = None) -> float:
    return 1.0  # the top of the jitter range: the backoff ceiling itself


def answer(status: int, outcome: Outcome, retry_after: float | None = None,
           should_retry: bool | None = None) -> Answer:
    return Answer(status, outcome, retry_after=retry_after, should_retry=should_retry)


def test_full_jitter_is_uniform_below_a_capped_exponential() -> None:
    assert [POLICY.backoff(n, top) for n in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert POLICY.backoff(1, lambda: 0.0) == 0.0
    assert POLICY.backoff(1, lambda: 0.25) == 0.25


@pytest.mark.parametrize("given, retry, wait", [
    (answer(500, Outcome.SERVER_ERROR), True, 0.5),
    (answer(501, Outcome.SERVER_ERROR), False, 0),
    (answer(503, Outcome.AT_CAPACITY, retry_after=3), True, 3.0),
    (answer(503, Outcome.AT_CAPACITY, retry_after=0.1), True, 0.5),
    (answer(503, Outcome.AT_CAPACITY, retry_after=61), False, 0),
    (answer(429, Outcome.RATE_LIMITED, retry_after=1.5), True, 1.5),
    (answer(429, Outcome.RATE_LIMITED), False, 0),
    (answer(429, Outcome.QUOTA_EXCEEDED, retry_after=1), False, 0),
    (answer(403, Outcome.ACCESS_DENIED), False, 0),
    (answer(400, Outcome.CLIENT_ERROR, should_retry=True), True, 0.5),
    (answer(429, Outcome.QUOTA_EXCEEDED, should_retry=True), True, 0.5),
    (answer(500, Outcome.SERVER_ERROR, should_retry=False), False, 0),
    (answer(429, Outcome.RATE_LIMITED, retry_after=1, should_retry=False), False, 0),
])
def test_decisions_on_answers(given: Answer, retry: bool, wait: float) -> None:
    decision = POLICY.on_answer(0, given, top)
    assert (decision.retry, decision.wait) == (retry, wait), decision.reason


def test_an_infinite_retry_after_is_not_retried_at_once() -> None:
    for header in ("inf", "1e400"):  # a server that says "not for a very long time"
        given = Answer.read(429, {"retry-after": header}, None)
        decision = POLICY.on_answer(0, given, top)
        assert not decision.retry and "Retry-After" in decision.reason, header


def test_no_retry_past_max_retries() -> None:
    given = answer(500, Outcome.SERVER_ERROR, should_retry=True)
    assert [POLICY.on_answer(n, given, top).retry for n in range(5)] == [True] * 3 + [False] * 2


@pytest.mark.parametrize("error, method, retry_after_send, retry", [
    (httpx.ConnectError("refused"), "POST", False, True),
    (httpx.ConnectTimeout("slow"), "POST", False, True),
    (httpx.ReadTimeout("slow"), "POST", True, True),
    (httpx.ReadTimeout("slow"), "POST", False, False),
    (httpx.RemoteProtocolError("gone"), "POST", False, False),
    (httpx.ReadError("reset"), "GET", False, True),
    (httpx.UnsupportedProtocol("ftp"), "GET", True, False),
])
def test_decisions_on_errors(error: Exception, method: str, retry_after_send: bool,
                             retry: bool) -> None:
    policy = RetryPolicy(retry_after_send=retry_after_send)
    assert policy.on_error(0, error, method, top).retry is retry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_the_minimum_then_a_tenth_of_requests() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, minimum=3, window=10, clock=clock)
    for _ in range(5):
        budget.record_request()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    for _ in range(35):
        budget.record_request()
    assert budget.try_spend() is True  # 4 <= 0.1 × 40
    assert budget.try_spend() is False
    assert budget.counts() == (40, 4)


def test_budget_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, minimum=1, window=10, clock=clock)
    budget.record_request()
    assert budget.try_spend() and not budget.try_spend()
    clock.now += 5
    assert not budget.try_spend()  # still in the window
    clock.now += 5.5
    assert budget.counts() == (0, 0)
    assert budget.try_spend()  # the old retry has left the window
