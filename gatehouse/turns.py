"""Long Python work done on the event loop a turn at a time, the loop free between turns.

A thread does not take such work off a serving worker: it holds the GIL in 5-ms turns, and
every request of the worker waits a turn at each of its awaits (compiling 10,000 edge rules in
a thread put 50-90 ms into the answers around it). Written as a generator that yields where it
may pause, the work runs here instead, giving the loop back every ``TURN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

# the longest work in turns holds the loop at a time (a step longer than this is not cut):
# a request arriving meanwhile waits at most about this long at each of its awaits
TURN_SECONDS = 0.0005


async def in_turns(steps: Iterable[T], turn_seconds: float | None = None) -> AsyncIterator[T]:
    """``steps``' items, with the loop let run whenever ``turn_seconds`` (TURN_SECONDS) have
    gone since it last ran (checked between items)."""
    clock = time.perf_counter
    if turn_seconds is None:
        turn_seconds = TURN_SECONDS
    until = clock() + turn_seconds
    for item in steps:
        yield item
        if clock() >= until:
            await asyncio.sleep(0)
            until = clock() + turn_seconds


async def run_in_turns(steps: Iterable[object], turn_seconds: float | None = None) -> None:
    """Run a generator of side effects to its end, in turns."""
    async for _ in in_turns(steps, turn_seconds):
        pass
