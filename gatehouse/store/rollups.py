"""Minute rollups in the store: rows added in batches by every replica, read back by window and
filter (the sums of the rows are the window's numbers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select

from gatehouse.store.db import Store
from gatehouse.store.tables import RollupMinute

DIMENSIONS = ("component", "model", "tier", "org", "project", "error_class")
COLUMNS = ("minute", *DIMENSIONS, "requests", "prompt_tokens", "completion_tokens",
           "admission_wait_ms", "latency", "ttfb")


class RollupRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows in ``COLUMNS`` order (histograms as JSON text)."""
        if rows:
            await self.store.insert_many(RollupMinute.__tablename__, COLUMNS, rows)

    async def fetch(self, since_minute: int, until_minute: int,
                    filters: Mapping[str, str] | None = None) -> list[RollupMinute]:
        """Rows of minutes ``since_minute`` ≤ m < ``until_minute`` whose dimensions equal the
        filters (names from ``DIMENSIONS``)."""
        r = RollupMinute
        query = select(r).where(r.minute >= since_minute, r.minute < until_minute)
        for name, value in (filters or {}).items():
            if name not in DIMENSIONS:
                raise ValueError(f"unknown rollup dimension {name!r}")
            query = query.where(getattr(r, name) == value)
        async with self.store.session() as s:
            return list((await s.scalars(query)).all())

    async def prune(self, before_minute: int) -> int:
        async with self.store.session() as s:
            result = await s.execute(delete(RollupMinute).where(
                RollupMinute.minute < before_minute))
            await s.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
