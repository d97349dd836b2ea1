"""The capacity gate: class order, fairness between orgs, reserved share, deadlines, shedding,
and slots given back on every path."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.admission.gate import Gate, Shed

CLASSES = {"high": (5.0, 100), "normal": (5.0, 100), "low": (5.0, 100)}


def gate(limit: int, reserved: float = 0.0, **classes: tuple[float, int]) -> Gate:
    return Gate(limit, reserved=reserved, classes={**CLASSES, **classes})


async def test_free_slots_are_taken_at_once() -> None:
    g = gate(2)
    assert await g.acquire("low", "a") == 0.0
    assert await g.acquire("low", "a") == 0.0
    assert g.running == 2


async def test_freed_slots_go_to_the_best_class_first() -> None:
    g = gate(1)
    await g.acquire("low", "x")
    order: list[str] = []

    async def wait(cls: str, org: str) -> None:
        await g.acquire(cls, org)
        order.append(cls)

    tasks = [asyncio.create_task(wait(c, "o")) for c in ("low", "normal", "high", "low")]
    await asyncio.sleep(0.01)
    for _ in range(4):
        g.release("low" if not order else order[-1], 0.0)
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == ["high", "normal", "low", "low"]


async def test_orgs_take_turns_inside_a_class() -> None:
    g = gate(1)
    await g.acquire("normal", "z")
    served: list[str] = []

    async def wait(org: str) -> None:
        await g.acquire("normal", org)
        served.append(org)

    # org "big" floods first, "small" arrives after
    tasks = [asyncio.create_task(wait("big")) for _ in range(5)]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(wait("small")) for _ in range(2)]
    await asyncio.sleep(0.01)
    for _ in range(7):
        g.release("normal", 0.0)
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert served[:4] == ["big", "small", "big", "small"]


async def test_reserved_share_is_for_the_top_class_only() -> None:
    g = gate(10, reserved=0.3)  # 7 slots for normal/low, all 10 for high
    for _ in range(7):
        await g.acquire("low", "a")
    with pytest.raises(Shed):
        await gate_with_deadline(g, "normal")
    for _ in range(3):
        assert await g.acquire("high", "b") == 0.0
    assert g.running == 10


async def gate_with_deadline(g: Gate, cls: str) -> float:
    g.classes[cls].deadline = 0.05
    return await g.acquire(cls, "late")


async def test_deadline_sheds_with_retry_after_and_leaves_no_trace() -> None:
    g = gate(1, low=(0.05, 100))
    await g.acquire("high", "a")
    with pytest.raises(Shed) as shed:
        await g.acquire("low", "b")
    assert shed.value.reason == "deadline" and shed.value.retry_after >= 1
    assert g.queued("low") == 0 and not g.classes["low"].orgs
    g.release("high", 0.0)
    assert g.running == 0


async def test_full_queue_sheds_at_once() -> None:
    g = gate(1, low=(5.0, 2))
    await g.acquire("high", "a")
    waiting = [asyncio.create_task(g.acquire("low", "b")) for _ in range(2)]
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Shed) as shed:
        await g.acquire("low", "c")
    assert shed.value.reason == "queue_full" and loop.time() - t0 < 0.01
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
    g.release("normal", 0.0)  # grants c's future
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert g.running == 0 and g.running_low == 0


async def test_no_slot_leaks_under_churn() -> None:
    g = gate(3, reserved=0.34, low=(0.02, 5), normal=(0.05, 5))

    async def one(i: int) -> None:
        cls = ("high", "normal", "low")[i % 3]
        try:
            await g.acquire(cls, f"org{i % 4}")
        except Shed:
            return
        try:
            await asyncio.sleep(0.005 * (i % 5))
            if i % 7 == 0:
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            pass
        finally:
            g.release(cls, 0.0)

    await asyncio.gather(*(one(i) for i in range(300)))
    assert g.running == 0 and g.running_low == 0
    assert all(c.waiting == 0 and not c.orgs for c in g.classes.values())


async def test_high_uses_free_reserved_slots_while_lower_classes_wait() -> None:
    g = gate(10, reserved=0.2)  # 8 shared slots
    for _ in range(8):
        await g.acquire("normal", "a")
    low = asyncio.create_task(g.acquire("low", "b"))  # waits: the shared slots are full
    await asyncio.sleep(0.01)
    assert not low.done()
    assert await asyncio.wait_for(g.acquire("high", "c"), 0.2) == 0.0  # at once
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)


async def test_a_wait_past_the_deadline_is_refused_at_once() -> None:
    g = gate(2, low=(0.2, 100))
    g._service = 1.0  # slots are held ~1 s each (as if measured)
    g._released = 100
    for _ in range(2):
        await g.acquire("high", "a")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Shed) as shed:
        await g.acquire("low", "b")  # expected wait 0.5 s > its 0.2 s deadline
    assert shed.value.reason == "wait_too_long" and loop.time() - t0 < 0.01
    g.classes["high"].deadline = 5.0
    waiting = asyncio.create_task(g.acquire("high", "c"))  # 0.5 s < 5 s: it queues
    await asyncio.sleep(0.01)
    assert not waiting.done() and g.queued("high") == 1
    g.release("high", loop.time())
    await asyncio.wait_for(waiting, 1)
