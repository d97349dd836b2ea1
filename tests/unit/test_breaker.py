"""The circuit breaker on an injected clock: one caller's failures never open it for the others;
a dead or failing backend still opens it within a handful of calls."""

from __future__ import annotations

import dataclasses

from gatehouse.app import build_router
from gatehouse.config import Settings, UpstreamSettings
from gatehouse.telemetry.metrics import Metrics
from gatehouse.upstream.breaker import (
    CLOSED,
    HALF_OPEN,
    MAX_CALLERS,
    OPEN,
    BreakerPolicy,
    CircuitBreaker,
)

POLICY = BreakerPolicy.of(UpstreamSettings(base_url="http://127.0.0.1:9/v1"))  # the defaults


def test_the_defaults() -> None:
    assert POLICY == BreakerPolicy(consecutive_failures=5, window=60, min_requests=5,
                                   failure_ratio=0.85, min_callers=2, cooldown=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(policy: BreakerPolicy = POLICY) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock = Clock()
    states: list[str] = []
    return CircuitBreaker(policy, clock=clock, on_change=states.append), clock, states


def call(b: CircuitBreaker, caller: str, ok: bool, connect: bool = False) -> bool:
    """One call through the breaker, as the stage makes it; False when it was held back."""
    if not b.allow(caller):
        return False
    if ok:
        b.success(caller)
    else:
        b.failure(caller, connect=connect)
    return True


# -- one caller's poison ------------------------------------------------------------------------

def test_one_callers_poison_among_others_successes_never_opens_it() -> None:
    b, clock, states = breaker()
    for i in range(500):
        assert call(b, "key:poison", ok=False)  # answered 500 every time, never held back
        if i % 10 == 0:
            assert call(b, "key:good", ok=True)
        clock.now += 0.5
    assert b.state == CLOSED and states == []
    assert not b.isolates("key:poison"), "others succeed: its failures are about its requests"


def test_one_callers_poison_in_a_quiet_hour_holds_back_only_that_caller() -> None:
    b, clock, states = breaker()
    for _ in range(50):
        call(b, "key:poison", ok=False)
        clock.now += 1
    assert b.state == CLOSED and states == [], "one caller never opens the circuit"
    assert b.isolates("key:poison") and not b.allow("key:poison")
    assert 0 < b.retry_in("key:poison") <= 30 and b.retry_in("key:good") == 0
    assert call(b, "key:good", ok=True), "everybody else still goes through"
    assert b.allow("key:good") and b.state == CLOSED


def test_four_xx_answers_never_count() -> None:
    b, _, states = breaker()
    for caller in ("a", "b", "c") * 50:
        assert b.allow(caller)
        b.answered(caller)
    assert b.state == CLOSED and states == [] and not b.isolates("a")


def test_failures_under_the_ratio_from_several_callers_do_not_open_it() -> None:
    b, clock, _ = breaker()
    for i in range(100):
        call(b, f"key:{i % 4}", ok=i % 3 != 0)  # a third fail, from four callers
        clock.now += 0.3
    assert b.state == CLOSED


# -- dead and failing backends ------------------------------------------------------------------

def test_dead_backend_opens_after_consecutive_connect_failures_from_one_caller() -> None:
    b, _, states = breaker()
    for _ in range(4):
        assert call(b, "key:only", ok=False, connect=True)
    assert b.state == CLOSED
    assert call(b, "key:only", ok=False, connect=True)
    assert b.state == OPEN and states == [OPEN]
    assert not b.allow("key:anyone-else") and b.retry_in("key:anyone-else") == 30


def test_an_answer_ends_a_run_of_connect_failures() -> None:
    b, _, _ = breaker()
    for _ in range(4):
        call(b, "x", ok=False, connect=True)
    b.answered("x")  # a 400: the backend is up
    for _ in range(4):
        call(b, "x", ok=False, connect=True)
    assert b.state == CLOSED


def test_failing_backend_opens_within_min_requests_calls_from_several_callers() -> None:
    b, clock, states = breaker()
    for i in range(5):
        assert b.state == CLOSED
        assert call(b, f"key:{i % 2}", ok=False)  # every call 500, two callers
        clock.now += 1
    assert b.state == OPEN and states == [OPEN]


def test_failing_backend_behind_a_busy_gateway_opens_on_the_ratio() -> None:
    b, clock, _ = breaker()
    for i in range(10):  # healthy traffic from many callers
        call(b, f"key:{i}", ok=True)
        clock.now += 0.1
    calls = 0
    while b.state == CLOSED:
        call(b, f"key:{calls % 7}", ok=False)
        calls += 1
        clock.now += 0.1
    assert calls == 57, "opens once 85 % of the window's calls failed (57 of 67)"


def test_a_busy_backend_that_goes_silent_opens_after_a_bucket_of_nothing_but_failures() -> None:
    """Rule 2b: a minute of successes would hold the ratio rule off for ~51 s of timeouts; a
    run of failures from several callers with no answer for window / 10 (6 s) opens it."""
    b, clock, states = breaker()
    for i in range(600):  # a minute of healthy traffic, 10 a second
        call(b, f"key:{i % 7}", ok=True)
        clock.now += 0.1
    calls = 0
    while b.state == CLOSED:
        call(b, f"key:{calls % 3}", ok=False)  # every call times out
        calls += 1
        clock.now += 0.1
    assert 61 <= calls <= 62 and states == [OPEN], "opens 6 s after the first failure"


def test_a_silent_run_needs_several_callers_and_no_answer_between() -> None:
    b, clock, _ = breaker()
    for i in range(100):
        call(b, f"key:{i % 7}", ok=True)
        clock.now += 0.1
    for _ in range(200):  # one caller alone, 20 s of failures: about its requests
        call(b, "key:poison", ok=False)
        clock.now += 0.1
    assert b.state == CLOSED and not b.isolates("key:poison")
    b, clock, _ = breaker()
    for i in range(600):  # two callers fail 80 % of the calls, the rest succeed: no run
        call(b, "key:ok" if i % 5 == 0 else f"key:{i % 2}", ok=i % 5 == 0)
        clock.now += 0.1
    assert b.state == CLOSED
    b, clock, _ = breaker()
    for i in range(100):
        call(b, f"key:{i % 7}", ok=True)
        clock.now += 0.1
    for i in range(100):  # a 4xx answer every second ends each run as well
        if i % 10 == 0:
            b.answered("key:x")
        call(b, f"key:{i % 2}", ok=False)
        clock.now += 0.1
    assert b.state == CLOSED


def test_single_user_with_a_broken_backend_is_held_back_after_min_requests() -> None:
    b, clock, _ = breaker()
    for _ in range(4):
        assert call(b, "key:me", ok=False)
    assert b.allow("key:me")
    b.failure("key:me")  # fifth failure in a row, no success at all: held back
    assert not b.allow("key:me") and b.retry_in("key:me") == 30
    clock.now += 30
    assert call(b, "key:me", ok=False), "after the cooldown one call tries again"
    assert not b.allow("key:me"), "…and failing again, it is held back again at once"
    clock.now += 30
    assert call(b, "key:me", ok=True)
    assert not b.isolates("key:me") and call(b, "key:me", ok=False) and b.allow("key:me")


def test_a_second_failing_caller_opens_it_for_everybody() -> None:
    b, clock, _ = breaker()
    for _ in range(5):
        call(b, "key:a", ok=False)
        clock.now += 1
    assert b.isolates("key:a") and b.state == CLOSED
    call(b, "key:b", ok=False)
    assert b.state == OPEN and not b.allow("key:c")


def test_old_failures_leave_the_window() -> None:
    b, clock, _ = breaker()
    for i in range(4):
        call(b, f"key:{i % 2}", ok=False)
    clock.now += 61
    call(b, "key:0", ok=False)
    assert b.state == CLOSED, "four of the five failures are older than the window"


# -- half-open ----------------------------------------------------------------------------------

def opened(policy: BreakerPolicy = POLICY) -> tuple[CircuitBreaker, Clock, list[str]]:
    b, clock, states = breaker(policy)
    for _ in range(5):
        call(b, "x", ok=False, connect=True)
    assert b.state == OPEN
    clock.now += 30
    return b, clock, states


def test_half_open_lets_one_probe_through_and_a_success_closes_it() -> None:
    b, clock, states = opened()
    assert b.allow("key:a") and b.state == HALF_OPEN
    assert not b.allow("key:b"), "only one probe at a time"
    b.success("key:a")
    assert b.state == CLOSED and b.allow("key:b")
    assert states == [OPEN, HALF_OPEN, CLOSED]
    b.failure("key:b")
    assert b.state == CLOSED, "the failures that opened it were forgotten"


def test_probe_connect_failure_reopens_it() -> None:
    b, clock, states = opened()
    assert b.allow("key:a")
    b.failure("key:a", connect=True)
    assert b.state == OPEN and not b.allow("key:b") and b.retry_in() == 30


def test_one_callers_failing_probe_cannot_keep_a_recovered_backend_shut() -> None:
    b, clock, _ = opened()
    assert b.allow("key:poison")
    b.failure("key:poison")  # its request 500s: maybe the request, maybe the backend
    assert b.state == HALF_OPEN and not b.allow("key:poison")
    assert b.allow("key:good"), "another caller probes next"
    b.success("key:good")
    assert b.state == CLOSED


def test_failing_probes_from_two_callers_reopen_it() -> None:
    b, clock, _ = opened()
    for caller in ("key:a", "key:b"):
        assert b.allow(caller)
        b.failure(caller)
    assert b.state == OPEN


def test_lost_probe_stops_blocking_after_one_cooldown_and_release_frees_it() -> None:
    b, clock, _ = opened()
    assert b.allow("key:a")  # probe taken, never reported
    assert not b.allow("key:b")
    clock.now += 30
    assert b.allow("key:b"), "a lost probe stops blocking after one cooldown"
    b.release("key:b")
    assert b.allow("key:c")


def test_only_the_probes_own_verdict_counts_in_half_open() -> None:
    b, clock, _ = opened()
    assert b.allow("key:probe")
    b.failure("key:slow")  # a call that started before the circuit opened ends now
    b.release("key:gone")
    assert b.state == HALF_OPEN and not b.isolates("key:slow")
    assert not b.allow("key:other"), "the probe is still out"
    b.answered("key:probe")  # a 400: alive, but says nothing of the 500s; the slot is free
    assert b.state == HALF_OPEN and b.allow("key:other")


def test_min_callers_one_is_the_classic_breaker() -> None:
    b, _, _ = breaker(dataclasses.replace(POLICY, min_callers=1))
    for _ in range(5):
        call(b, "key:a", ok=False)
    assert b.state == OPEN


def test_memory_is_bounded_by_max_callers() -> None:
    b, clock, _ = breaker()
    for i in range(MAX_CALLERS * 3):
        b.failure(f"ip:{i}")
        call(b, "key:good", ok=True)
    assert len(b._callers) <= MAX_CALLERS
    assert all(len(bucket.callers) <= POLICY.min_callers for bucket in b._buckets)


# -- one breaker per (backend, model) -----------------------------------------------------------

def test_breakers_are_per_backend_and_model_and_the_gauge_says_which() -> None:
    settings = Settings.model_validate({
        "upstreams": {"llama": {"base_url": "http://127.0.0.1:9/v1"}},
        "models": {"chat": {"backends": [{"upstream": "llama", "model": "qwen"}]},
                   "embed": {"backends": [{"upstream": "llama", "model": "nomic"}]},
                   "chat-alias": {"backends": [{"upstream": "llama", "model": "qwen"}]}}})
    metrics = Metrics()
    router, _ = build_router(settings, metrics, environ={})
    chat, embed, alias = (router.routes[m].targets[0].breaker
                          for m in ("chat", "embed", "chat-alias"))
    assert chat is alias, "two names for one model on one backend share its breaker"
    for _ in range(5):
        embed.failure("key:a", connect=False)
        embed.failure("key:b", connect=False)
    assert embed.state == OPEN and chat.state == CLOSED and chat.allow("key:a")

    def gauge(model: str) -> float | None:
        return metrics.registry.get_sample_value("gatehouse_upstream_circuit_open",
                                                 {"backend": "llama", "model": model})
    assert gauge("nomic") == 1 and gauge("qwen") == 0
