"""A loop of its own, closed after it, for every sync test (autouse, from tests/conftest.py);
and the loop's turns counted while a block runs (:func:`counted_turns`).

looptime (the controllable clock of the admission tests) asks pytest-asyncio's policy for the
event loop even in a sync test; with none set, the policy makes one that nobody closes, and
its ResourceWarning later fails whichever test the garbage collector happens to run in."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest


@pytest.fixture(autouse=True)
def closed_loop_for_sync_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    if inspect.iscoroutinefunction(request.function):
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


class Turns:
    count = 0


@contextlib.asynccontextmanager
async def counted_turns() -> AsyncIterator[Turns]:
    """The event loop's turns while the block runs (``.count``): a task that yields after each
    — how a test sees that work let the loop run in between, without a clock."""
    turns = Turns()

    async def count() -> None:
        while True:
            await asyncio.sleep(0)
            turns.count += 1

    task = asyncio.create_task(count())
    try:
        yield turns
    finally:
        task.cancel()
