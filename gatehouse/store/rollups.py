"""Rollups in the store: minute rows added in batches by every replica, folded into hour and
day rows by the compaction job (telemetry/compaction.py), read back by window and filter — the
sums of the rows are the window's numbers, whichever tables they come from.

Compaction marks what it folded: a minute row is ``compacted`` once its counts are in an hour
row, in the same transaction that writes the hour row (and an hour row once it is in a day
row). So every count is in exactly one row that a read takes: :func:`plan` reads whole buckets
from the coarsest table plus the rows of finer tables inside them that are not compacted yet
(late ones, or not compacted so far), and the ragged edges from the finer tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    false,
    insert,
    select,
    true,
    union_all,
    update,
)

from gatehouse.store.db import Store
from gatehouse.store.tables import RollupDay, RollupHour, RollupMinute
from gatehouse.telemetry.histogram import Histogram

DIMENSIONS = ("component", "model", "tier", "org", "project", "error_class")
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "admission_wait_ms")
COLUMNS = ("minute", *DIMENSIONS, *COUNTS, "latency", "ttfb")
GRAINS = ("minute", "hour", "day")
WIDTH = {"minute": 1, "hour": 60, "day": 1440}  # in minutes
TABLES: dict[str, type[RollupMinute | RollupHour | RollupDay]] = {
    "minute": RollupMinute, "hour": RollupHour, "day": RollupDay}
FOLDED: dict[str, type[RollupMinute | RollupHour]] = {"minute": RollupMinute, "hour": RollupHour}
COMPACT_BATCH = 5000  # source rows folded per transaction


@dataclass(frozen=True, slots=True)
class Part:
    """The rows of one grain's table whose bucket starts in ``since`` ≤ minute < ``until``;
    ``fresh``: only those not compacted into the next grain yet."""

    grain: str
    since: int
    until: int
    fresh: bool = False


@dataclass(slots=True)
class Bucket:
    """One rollup row, from any table: the same columns, ``minute`` its bucket's start."""

    minute: int
    component: str
    model: str
    tier: str
    org: str
    project: str
    error_class: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    admission_wait_ms: float
    latency: str
    ttfb: str


def plan(since: int, until: int, grain: str) -> list[Part]:
    """The parts that hold the minutes ``since`` ≤ m < ``until`` exactly once each: whole
    buckets of ``grain`` from its table (with the finer rows inside them not compacted yet),
    the ragged edges from finer grains."""
    if since >= until:
        return []
    if grain == "minute":
        return [Part("minute", since, until)]
    finer = GRAINS[GRAINS.index(grain) - 1]
    width = WIDTH[grain]
    first, last = -(-since // width) * width, until // width * width
    if first >= last:
        return plan(since, until, finer)
    fresh = [Part(g, first, last, fresh=True) for g in GRAINS[:GRAINS.index(grain)]]
    return [*plan(since, first, finer), Part(grain, first, last), *fresh,
            *plan(last, until, finer)]


def where_of(part: Part) -> list[ColumnElement[bool]]:
    """The conditions that pick ``part``'s rows from its grain's table."""
    t = TABLES[part.grain]
    where: list[ColumnElement[bool]] = [t.minute >= part.since, t.minute < part.until]
    if part.fresh:
        where.append(FOLDED[part.grain].compacted == false())
    return where


class RollupRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Minute rows in ``COLUMNS`` order (histograms as JSON text)."""
        if rows:
            await self.store.insert_many(RollupMinute.__tablename__, COLUMNS, rows)

    async def fetch(self, since_minute: int, until_minute: int,
                    filters: Mapping[str, str] | None = None) -> list[Bucket]:
        """Minute rows of minutes ``since_minute`` ≤ m < ``until_minute`` whose dimensions
        equal the filters (names from ``DIMENSIONS``)."""
        return await self.read([Part("minute", since_minute, until_minute)], filters)

    async def read(self, parts: Iterable[Part],
                   filters: Mapping[str, str | Sequence[str]] | None = None) -> list[Bucket]:
        """The rows of every part matching the filters (a value, or any of several), in one
        statement (one snapshot: a compaction committing meanwhile cannot make a row counted
        twice or not at all)."""
        for name in filters or {}:
            if name not in DIMENSIONS:
                raise ValueError(f"unknown rollup dimension {name!r}")
        selects = []
        for part in parts:
            t = TABLES[part.grain]
            where = where_of(part)
            where += [getattr(t, name) == value if isinstance(value, str)
                      else getattr(t, name).in_(list(value))
                      for name, value in (filters or {}).items()]
            selects.append(select(*(getattr(t, c) for c in COLUMNS)).where(and_(*where)))
        if not selects:
            return []
        query = selects[0] if len(selects) == 1 else union_all(*selects)
        async with self.store.session() as s:
            return [Bucket(*row) for row in (await s.execute(query)).all()]

    async def compact(self, grain: str, before: int, batch: int = COMPACT_BATCH) -> int:
        """Fold up to ``batch`` rows of ``grain`` ("minute" or "hour") not compacted yet, whose
        bucket starts before minute ``before``, into new rows of the next grain, and mark them
        compacted — one transaction, so a row's counts are in one place or the other, never
        both or neither. Rows another replica is folding at the same time are skipped
        (PostgreSQL: locked, SKIP LOCKED) or waited for (SQLite: the write lock is taken
        first); and the marking counts the rows it changed, rolling back if another run marked
        any. Returns the rows folded."""
        coarser = GRAINS[GRAINS.index(grain) + 1]
        source, target, width = FOLDED[grain], TABLES[coarser], WIDTH[coarser]
        compacted = source.compacted
        pick = (select(source).where(compacted == false(), source.minute < before)
                .order_by(source.id).limit(batch))
        if not self.store.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        async with self.store.session() as s, s.begin():
            if self.store.is_sqlite:
                # take the write lock first (a write matching no row does): a transaction that
                # read, then writes, fails outright if another connection wrote meanwhile
                await s.execute(update(source).where(false()).values(compacted=True))
            rows = cast(list[RollupMinute | RollupHour], list((await s.scalars(pick)).all()))
            if not rows:
                return 0
            sums: dict[tuple[Any, ...], list[Any]] = {}
            for r in rows:
                key = (r.minute - r.minute % width, *(getattr(r, d) for d in DIMENSIONS))
                into = sums.get(key)
                if into is None:
                    sums[key] = [r.requests, r.prompt_tokens, r.completion_tokens,
                                 r.admission_wait_ms, _histogram(r.latency), _histogram(r.ttfb)]
                    continue
                for i, name in enumerate(COUNTS):
                    into[i] += getattr(r, name)
                into[4].merge(_histogram(r.latency))
                into[5].merge(_histogram(r.ttfb))
            await s.execute(insert(target), [
                {**dict(zip(("minute", *DIMENSIONS), key, strict=True)),
                 **dict(zip(COUNTS, v[:4], strict=True)),
                 "latency": orjson.dumps(v[4].to_json()).decode(),
                 "ttfb": orjson.dumps(v[5].to_json()).decode()} for key, v in sums.items()])
            ids = [r.id for r in rows]
            marked = await s.execute(
                update(source).where(source.id.in_(ids), compacted == false())
                .values(compacted=True).execution_options(synchronize_session=False))
            changed = int(marked.rowcount)  # type: ignore[attr-defined]
            if changed != len(ids):
                raise CompactionConflict(f"{len(ids) - changed} {grain} rows were compacted "
                                         "meanwhile")
        return len(rows)

    async def prune(self, grain: str, before_minute: int) -> int:
        """Delete ``grain`` rows whose bucket starts before ``before_minute`` — of minutes and
        hours only those compacted already, so nothing is lost to retention that no coarser
        row holds."""
        t = TABLES[grain]
        query = delete(t).where(t.minute < before_minute)
        if grain in FOLDED:
            query = query.where(FOLDED[grain].compacted == true())
        async with self.store.session() as s:
            result = await s.execute(query)
            await s.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class CompactionConflict(Exception):
    """Another replica compacted some of the same rows first: this run's work is rolled back."""


def _histogram(text: str) -> Histogram:
    return Histogram.from_json(orjson.loads(text))
