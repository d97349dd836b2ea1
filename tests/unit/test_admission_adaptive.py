"""The adaptive (gradient) concurrency limit."""

from __future__ import annotations

import asyncio

from gatehouse.admission.adaptive import WINDOW, GradientLimit
from gatehouse.admission.gate import Gate


def feed(g: GradientLimit, ttfb: float, windows: int) -> None:
    for _ in range(WINDOW * windows):
        g.sample(ttfb)


def test_healthy_backend_lets_the_limit_grow_to_the_max() -> None:
    g = GradientLimit(4, 1, 64)
    feed(g, 0.05, 30)
    assert g.limit == 64


def test_queueing_at_the_backend_shrinks_the_limit() -> None:
    g = GradientLimit(64, 2, 64)
    feed(g, 0.05, 3)  # baseline 50 ms
    feed(g, 0.5, 10)  # 10× slower first tokens: the backend is queueing
    assert g.limit < 16
    feed(g, 0.05, 40)  # recovered
    assert g.limit == 64


def test_never_below_the_minimum_and_ignores_nonsense() -> None:
    g = GradientLimit(16, 5, 16)
    feed(g, 0.01, 2)
    feed(g, 10.0, 10)  # 1000× slower: halved each window, down to the floor
    assert g.limit == 5
    assert not g.sample(0) and not g.sample(-1)


async def test_gate_resize_lets_waiters_in() -> None:
    gate = Gate(1, reserved=0.0, classes={"high": (5, 10), "normal": (5, 10), "low": (5, 10)})
    await gate.acquire("normal", "a")
    waiter = asyncio.create_task(gate.acquire("normal", "b"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    gate.resize(2, 0.0)
    await asyncio.wait_for(waiter, 1)
    assert gate.running == 2
