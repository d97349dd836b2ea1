"""Per-org, per-project, per-key and per-user limit overrides (admin API and CLI).

The whole table is small; each replica holds it in memory and reloads it every few seconds
and at once when an override changes (a broadcast on the state layer), so the hot path never
queries the store for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import delete, select

from gatehouse.quota.policy import LIMIT_MAX, LIMITS
from gatehouse.state.base import State, StateError
from gatehouse.store.db import Store
from gatehouse.store.tables import LimitOverride

log = logging.getLogger("gatehouse.quota")
CHANNEL = "quota.overrides"
RELOAD_SECONDS = 5.0
SCOPES = ("org", "project", "key", "user")

Table = dict[tuple[str, str], dict[str, int | None]]


class Overrides:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.snapshot: Table = {}
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()

    async def load(self) -> Table:
        async with self.store.session() as s:
            rows = (await s.scalars(select(LimitOverride))).all()
        table: Table = {}
        for row in rows:
            table.setdefault((row.scope, row.scope_id), {})[row.field] = row.value
        # the same object while nothing changed: the quota stage keeps each principal's limits
        # for as long as the snapshot it made them from (a new one every few seconds made it
        # work them out again, for every principal, after each reload)
        if table != self.snapshot:
            self.snapshot = table
        return self.snapshot

    async def start(self, state: State) -> None:
        await self.load()
        state.subscribe(CHANNEL, lambda _message: self._dirty.set())
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and aclose() would wait forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELOAD_SECONDS):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.load()
            except Exception as exc:  # keep the last snapshot; try again next time
                log.warning("could not reload limit overrides: %s", type(exc).__name__)

    async def set(self, scope: str, scope_id: str, field: str, value: int | None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if field not in LIMITS:
            raise ValueError(f"unknown limit {field!r}; one of {', '.join(LIMITS)}")
        if value is not None and not 1 <= value <= LIMIT_MAX:
            raise ValueError(f"a limit is a whole number from 1 to {LIMIT_MAX:,} (or "
                             "unlimited)")
        stmt = self.store.insert(LimitOverride).values(
            scope=scope, scope_id=scope_id, field=field, value=value, updated_at=time.time())
        async with self.store.session() as s:
            await s.execute(stmt.on_conflict_do_update(
                index_elements=["scope", "scope_id", "field"],
                set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}))
            await s.commit()

    async def clear(self, scope: str, scope_id: str, field: str | None = None) -> int:
        query = delete(LimitOverride).where(LimitOverride.scope == scope,
                                            LimitOverride.scope_id == scope_id)
        if field is not None:
            query = query.where(LimitOverride.field == field)
        async with self.store.session() as s:
            result = await s.execute(query)
            await s.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def announce(state: State) -> None:
    try:
        await state.publish(CHANNEL, b"changed")
    except StateError as exc:
        log.warning("could not announce an override change (%s); replicas reload within "
                    "%.0f s", exc, RELOAD_SECONDS)
