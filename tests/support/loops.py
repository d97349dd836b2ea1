"""A loop of its own, closed after it, for every sync test (autouse, from tests/conftest.py).

looptime (the controllable clock of the admission tests) asks pytest-asyncio's policy for the
event loop even in a sync test; with none set, the policy makes one that nobody closes, and
its ResourceWarning later fails whichever test the garbage collector happens to run in."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

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
