"""The capacity gate: class order, fairness between orgs, reserved share, deadlines, shedding,
and slots given back on every path — on a controllable clock (``looptime``: the event loop's
time only moves when every task waits, so seconds of queueing take no real time and every
wait below is exact)."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.admission.gate import WARM, Gate, Shed

pytestmark = pytest.mark.looptime

CLASSES = {"high": (5.0, 100), "normal": (5.0, 100), "low": (5.0, 100)}


def gate(limit: int, reserved: float = 0.0, **classes: tuple[float, int]) -> Gate:
    return Gate(limit, reserved=reserved, classes={**CLASSES, **classes})


def now() -> float:
    return asyncio.get_running_loop().time()


async def hold(g: Gate, cls: str, seconds: float, org: str = "o") -> float:
    """One request: wait for a slot, hold it ``seconds``, give it back; returns the wait."""
    waited = await g.acquire(cls, org)
    started = g.now()
    try:
        await asyncio.sleep(seconds)
    finally:
        g.release(cls, started)
    return waited


async def warm(g: Gate, service: float) -> None:
    """Give the gate WARM answers of ``service`` seconds each, so its estimates are live."""
    for _ in range(0, WARM, g.limit):
        await asyncio.gather(*(hold(g, "normal", service) for _ in range(g.limit)))


async def top_class_about(g: Gate, n: int) -> None:
    """``n`` top-class requests arrive now (and end at once): the top class is about."""
    for _ in range(n):
        await g.acquire("high", "p")
    for _ in range(n):
        g.release("high", g.now())


async def test_free_slots_are_taken_at_once() -> None:
    g = gate(2)
    assert await g.acquire("low", "a") == 0.0
    assert await g.acquire("low", "a") == 0.0
    assert g.running == 2


async def test_a_waiter_starts_when_a_slot_is_freed_and_its_wait_is_measured() -> None:
    g = gate(1)
    first = asyncio.create_task(hold(g, "normal", 0.75))
    await asyncio.sleep(0)
    assert await hold(g, "normal", 0.1) == pytest.approx(0.75)
    await first


async def test_freed_slots_go_to_the_best_class_first() -> None:
    g = gate(1)
    order: list[str] = []

    async def one(cls: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await hold(g, cls, 1.0)
        order.append(cls)

    # a low request holds the slot; then low, normal, high, low arrive while it runs
    await asyncio.gather(one("low", 0), one("low", 0.1), one("normal", 0.2), one("high", 0.3),
                         one("low", 0.4))
    assert order == ["low", "high", "normal", "low", "low"]


async def test_orgs_take_turns_inside_a_class() -> None:
    g = gate(1)
    served: list[str] = []

    async def one(org: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await hold(g, "normal", 0.5, org)
        served.append(org)

    # "big" floods first (one running + 5 queued), "small" sends 2 after it
    await asyncio.gather(*(one("big", 0) for _ in range(6)),
                         *(one("small", 0.1) for _ in range(2)))
    assert served[:5] == ["big", "big", "small", "big", "small"]


async def test_reserved_share_is_kept_for_the_top_class_while_it_is_about() -> None:
    g = gate(10, reserved=0.3)  # 3 slots kept while high traffic comes
    for _ in range(6):  # high: 2 per second, each held 1 s
        asyncio.create_task(hold(g, "high", 1.0))
        await asyncio.sleep(0.5)
    lows = [asyncio.create_task(g.acquire("low", "a")) for _ in range(10)]
    await asyncio.sleep(0)
    assert g.running_low == 7 and sum(t.done() for t in lows) == 7  # never the last 3
    for t in lows:
        t.cancel()
    await asyncio.gather(*lows, return_exceptions=True)
    for _ in range(7):
        g.release("low", g.now())
    await asyncio.sleep(30)  # the top class has gone quiet: its reserve is lent out
    for _ in range(10):
        assert await g.acquire("low", "a") == 0.0
    assert g.running_low == 10


async def test_without_top_class_traffic_the_whole_capacity_serves_the_rest() -> None:
    g = gate(10, reserved=0.3)
    for _ in range(10):
        assert await g.acquire("low", "a") == 0.0
    assert g.running_low == 10


async def test_a_burst_of_top_class_traffic_gets_its_reserve_back() -> None:
    g = gate(10, reserved=0.3)
    await top_class_about(g, 5)
    for _ in range(7):
        assert await g.acquire("low", "a") == 0.0
    low = asyncio.create_task(g.acquire("low", "a"))  # the last 3 are kept for the top class
    await asyncio.sleep(0.1)
    assert not low.done()
    assert await g.acquire("high", "p") == 0.0  # a top-class request finds its room at once
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)


async def test_deadline_sheds_at_the_deadline_with_retry_after_and_leaves_no_trace() -> None:
    g = gate(1, low=(0.25, 100))
    await g.acquire("high", "a")
    t0 = now()
    with pytest.raises(Shed) as shed:
        await g.acquire("low", "b")
    assert shed.value.reason == "deadline" and now() - t0 == pytest.approx(0.25)
    assert shed.value.retry_after >= 1
    assert g.queued("low") == 0 and not g.classes["low"].orgs
    g.release("high", g.now())
    assert g.running == 0


async def test_full_queue_sheds_at_once() -> None:
    g = gate(1, low=(5.0, 2))
    await g.acquire("high", "a")
    waiting = [asyncio.create_task(g.acquire("low", "b")) for _ in range(2)]
    await asyncio.sleep(0.01)
    t0 = now()
    with pytest.raises(Shed) as shed:
        await g.acquire("low", "c")
    assert shed.value.reason == "queue_full" and now() == t0
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert g.queued("low") == 0


async def test_cancelled_waiters_give_everything_back() -> None:
    g = gate(1)
    await g.acquire("normal", "a")
    waiter = asyncio.create_task(g.acquire("normal", "b"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert g.queued("normal") == 0
    # granted, then cancelled before it could run: the slot comes back
    granted = asyncio.create_task(g.acquire("normal", "c"))
    await asyncio.sleep(0.01)
    g.release("normal", g.now())  # grants c's future
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert g.running == 0 and g.running_low == 0


async def test_no_slot_leaks_under_churn() -> None:
    g = gate(3, reserved=0.34, low=(0.2, 5), normal=(0.5, 5))

    async def one(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        cls = ("high", "normal", "low")[i % 3]
        try:
            await g.acquire(cls, f"org{i % 4}")
        except Shed:
            return
        started = g.now()
        try:
            await asyncio.sleep(0.05 * (i % 5))
            if i % 7 == 0:
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            pass
        finally:
            g.release(cls, started)

    tasks = [asyncio.create_task(one(i)) for i in range(300)]
    await asyncio.sleep(1.0)
    for t in tasks[::11]:  # some clients leave while queued or running
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert g.running == 0 and g.running_low == 0
    assert all(c.waiting == 0 and not c.orgs for c in g.classes.values())


async def test_high_uses_free_reserved_slots_while_lower_classes_wait() -> None:
    g = gate(10, reserved=0.2)
    await top_class_about(g, 5)
    for _ in range(8):
        await g.acquire("normal", "a")
    low = asyncio.create_task(g.acquire("low", "b"))  # waits: the shared slots are full
    await asyncio.sleep(0.01)
    assert not low.done()
    assert await g.acquire("high", "c") == 0.0  # at once
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)


async def test_a_wait_past_the_deadline_is_refused_at_once() -> None:
    g = gate(2, low=(0.2, 100))
    await warm(g, 1.0)  # slots are held 1 s each
    for _ in range(2):
        await g.acquire("high", "a")
    t0 = now()
    with pytest.raises(Shed) as shed:
        await g.acquire("low", "b")  # expected wait 0.5 s > its 0.2 s deadline
    assert shed.value.reason == "wait_too_long" and now() == t0
    waiting = asyncio.create_task(g.acquire("high", "c"))  # 0.5 s < 5 s: it queues
    await asyncio.sleep(0.01)
    assert not waiting.done() and g.queued("high") == 1
    g.release("high", now() - 1.0)
    assert await waiting == pytest.approx(0.01)


async def test_better_classes_arriving_faster_than_the_drain_shed_the_rest_at_once() -> None:
    """Capacity 4 × 1 s = 4 req/s. High traffic keeps arriving at 5 per second: a normal
    request would wait behind every new high one until its deadline and then be refused, so
    it is refused at arrival instead — a cheap answer, not a 5-second one."""
    g = gate(4)
    await warm(g, 1.0)
    stop = now() + 8.0

    async def high_stream() -> None:
        while now() < stop:
            asyncio.create_task(hold(g, "high", 1.0))
            await asyncio.sleep(0.2)

    feeder = asyncio.create_task(high_stream())
    await asyncio.sleep(5.0)  # the arrival rate is measured
    t0 = now()
    with pytest.raises(Shed) as shed:
        await g.acquire("normal", "b")
    assert shed.value.reason == "wait_too_long" and now() == t0
    assert g.expected_wait("normal", now()) == float("inf")
    await feeder
    await asyncio.sleep(60)  # the high backlog drains
    assert g.running == 0


async def test_better_classes_arriving_slower_than_the_drain_let_the_rest_queue() -> None:
    g = gate(4)
    await warm(g, 1.0)
    for _ in range(4):  # high arrives at 1 per second, a quarter of the capacity
        asyncio.create_task(hold(g, "high", 1.0))
        await asyncio.sleep(1.0)
    # all 4 slots busy now? fill them, then a normal request queues and starts in time
    fill = [asyncio.create_task(hold(g, "normal", 1.0)) for _ in range(4)]
    await asyncio.sleep(0)
    assert g.expected_wait("normal", now()) < 5.0
    assert await hold(g, "normal", 0.1) <= 1.0
    await asyncio.gather(*fill)


async def test_while_the_top_class_is_about_one_slot_stays_free_for_it() -> None:
    """Answers of equal length give slots back in bursts; a top-class request must not wait
    for the next burst, so the lower classes leave the last free slot alone."""
    g = gate(10, reserved=0.2)
    for _ in range(5):
        await g.acquire("high", "p")  # the top class holds more than its reserve
    for _ in range(4):
        assert await g.acquire("low", "a") == 0.0
    low = asyncio.create_task(g.acquire("low", "a"))
    await asyncio.sleep(0.1)
    assert not low.done() and g.running == 9
    assert await g.acquire("high", "p") == 0.0
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)
