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
from typing import Any

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


@contextlib.asynccontextmanager
async def json_pieces_watched(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[int]]:
    """While the block runs, an admin listing's pieces (gatehouse/admin/models.py
    ``_json_pieces``) are noted with the loop's turn count when each was made, a turn
    allowed after every piece: the list rises strictly when other work ran between them."""
    from gatehouse import turns as turns_module
    from gatehouse.admin import models as admin_models

    monkeypatch.setattr(turns_module, "TURN_SECONDS", 0.0)
    seen: list[int] = []
    pieces = admin_models._json_pieces

    def watched(items: Any) -> Any:
        for piece in pieces(items):
            seen.append(turns.count)
            yield piece

    monkeypatch.setattr(admin_models, "_json_pieces", watched)
    async with counted_turns() as turns:
        yield seen
    monkeypatch.setattr(admin_models, "_json_pieces", pieces)
