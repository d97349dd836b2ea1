from gatehouse.upstream.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    states: list[str] = []
    b = CircuitBreaker(failures=3, cooldown=10, clock=clock, on_change=states.append)
    b.failure(); b.failure(); b.success(); b.failure(); b.failure()
    assert b.state == CLOSED, "failures must be consecutive"
    b.failure()
    assert b.state == OPEN and not b.allow() and b.retry_in() == 10
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow(), "only one probe at a time"
    b.success()
    assert b.state == CLOSED and b.allow()
    assert states == [OPEN, HALF_OPEN, CLOSED]


def test_failed_probe_reopens_and_lost_probe_does_not_block_forever() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown=5, clock=clock)
    b.failure()
    clock.now += 5
    assert b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.now += 5
    assert b.allow()  # probe taken, never reported
    assert not b.allow()
    clock.now += 5
    assert b.allow(), "a lost probe stops blocking after one cooldown"
    b.release()
    assert b.allow()
