"""Batched writes off the request path: ``flush`` every few seconds in the background, and
once more on close so nothing batched is lost at shutdown (usage rollups, key last-used
times, Ray events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait until it has ended (None: nothing to stop)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Flusher:
    def __init__(self, flush: Callable[[], Awaitable[None]], seconds: float, *,
                 on_close: bool = True) -> None:
        self.flush = flush
        self.seconds = seconds
        self.on_close = on_close  # flush once more when closed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            await self.flush()

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self.on_close:
            await self.flush()
