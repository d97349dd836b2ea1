"""Long Python work done on the event loop a turn at a time, the loop free between turns.

A thread does not take such work off a serving worker: it holds the GIL in 5-ms turns, and
every request of the worker waits a turn at each of its awaits (compiling 10,000 edge rules in
a thread put 50-90 ms into the answers around it). Written as a generator that yields where it
may pause, the work runs here instead, giving the loop back every ``TURN_SECONDS``.

Work that cannot be cut so (building the admin app: imports, FastAPI's routes, pydantic's
schemas) goes to a thread with :func:`to_thread_in_turns`: while it runs, the interpreter hands
the GIL over every ``GIL_TURN_SECONDS`` instead of every 5 ms.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
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


# how often a thread doing such work hands the GIL over (the interpreter's default: 5 ms)
GIL_TURN_SECONDS = 0.0005
_threads_in_turns = 0  # how many to_thread_in_turns calls are running (the interval is shared)
_usual_interval = 0.0


async def to_thread_in_turns(work: Callable[[], T]) -> T:
    """``work()`` in a thread, the GIL handed over every ``GIL_TURN_SECONDS`` while it runs
    (``sys.setswitchinterval``: the process's, restored when the last such call ends). At the
    usual 5 ms, each await of every request on the loop waited up to 5 ms for its turn: the
    first admin request to a worker (its app built in a thread) put p99 at 500 req/s at 65-116
    ms for that cell, the longest answer at 160-215 ms; so, 4.7-5.1 and 18-22 ms, for the build
    taking ~0.1 s longer (bench/tail.py --admin-gets 1 --first-admin --repeats 1). Work inside
    one C call (an import's, a pydantic-core schema's) still holds the GIL to its end."""
    global _threads_in_turns, _usual_interval
    if _threads_in_turns == 0:
        _usual_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_TURN_SECONDS)
    _threads_in_turns += 1
    try:
        return await asyncio.to_thread(work)
    finally:
        _threads_in_turns -= 1
        if _threads_in_turns == 0:
            sys.setswitchinterval(_usual_interval)
