"""Compaction of minute rollups into hours and days (telemetry/compaction.py): every window of
the health view answers from hours and days exactly what the minute rows alone give, after the
minutes are pruned too; late minute rows (a replica flushing old cells) are counted once;
replicas compacting at once never fold a row twice; a store that is down only delays it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gatehouse.store.db import Store
from gatehouse.store.rollups import GRAINS, WIDTH, RollupRows, plan
from gatehouse.store.tables import RollupDay, RollupHour, RollupMinute
from gatehouse.telemetry.compaction import Compactor, Retention
from gatehouse.telemetry.health import WINDOWS, HealthQuery, health, read_health, span
from tests.support.services import bare_store, migrate_to
from tests.unit.test_health import as_tuple, row
from tests.unit.test_request_log import store  # noqa: F401  (the fixture)

KEPT = Retention()


@pytest.mark.parametrize("grain", GRAINS)
def test_plan_holds_every_minute_once(grain: str) -> None:
    rng = random.Random(grain)
    for _ in range(300):
        since = rng.randrange(0, 10 * 1440)
        until = since + rng.choice([0, 1, 59, 60, 61, 1439, 1440, 3000, 5 * 1440 + 7])
        parts = plan(since, until, grain)
        whole = [p for p in parts if not p.fresh]
        covered = sorted(m for p in whole for m in range(p.since, p.until))
        assert covered == list(range(since, until)) or not whole and since == until
        for p in whole:  # buckets whole: they start and end on their width
            assert p.since % WIDTH[p.grain] == 0 and p.until % WIDTH[p.grain] == 0
        for p in parts:
            if p.fresh:  # finer rows not compacted yet, inside a coarser part read whole
                assert any(w.since == p.since and w.until == p.until
                           and WIDTH[w.grain] > WIDTH[p.grain] for w in whole)


def minute_rows(now: float, n: int, seed: int, days: float = 95) -> list[RollupMinute]:
    rng = random.Random(seed)
    last = int(now // 60)
    return [row(last - rng.randrange(int(days * 1440)), [rng.lognormvariate(3, 1)
                                                         for _ in range(rng.randrange(1, 4))],
                model=rng.choice(["m1", "m2"]), tier=rng.choice(["standard", "priority"]),
                error_class=rng.choice(["ok", "ok", "unavailable", "timeout"]),
                ttfb=[rng.uniform(1, 50)], tokens=(rng.randrange(50), rng.randrange(80)),
                wait_ms=float(rng.randrange(5)))
            for _ in range(n)]


async def same_as_minutes(db: Store, minutes: list[RollupMinute], now: float) -> None:
    for window in WINDOWS:
        for filters in ({}, {"model": "m2", "tier": "priority"}):
            query = HealthQuery(window, filters)
            got = await read_health(db, query, retention=KEPT, now=now)
            chosen = [r for r in minutes if all(getattr(r, k) == v for k, v in filters.items())]
            want = health(chosen, query, filters, now=now, retention=KEPT)
            assert got == want, (window, filters, got["requests"], want["requests"])


async def count(db: Store, table: type[RollupMinute | RollupHour | RollupDay]) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


async def test_hours_and_days_answer_what_minutes_would(store: Store) -> None:  # noqa: F811
    now = time.time()
    rows = RollupRows(store)
    minutes = minute_rows(now, 1500, seed=3)
    await rows.add([as_tuple(r) for r in minutes])
    await same_as_minutes(store, minutes, now)  # nothing compacted yet

    compactor = Compactor(rows, KEPT, clock=lambda: now, batch=400)
    folded = await compactor.compact()
    assert folded["minute"] > 1000 and folded["hour"] > 500
    assert await count(store, RollupHour) and await count(store, RollupDay)
    await same_as_minutes(store, minutes, now)
    assert await compactor.compact() == {"minute": 0, "hour": 0}  # nothing left: idempotent

    pruned = await compactor.prune()
    assert pruned["minute"] > 500 and pruned["hour"] == 0  # older than 14 days, compacted
    assert await count(store, RollupMinute) < len(minutes)
    await same_as_minutes(store, minutes, now)  # still what all the minutes would give
    sent = sum(r.requests for r in minutes if r.minute >= span("90d", now, KEPT)[0])
    assert (await read_health(store, HealthQuery("90d"), retention=KEPT,
                              now=now))["requests"] == sent


async def test_late_minute_rows_count_once(store: Store) -> None:  # noqa: F811
    """A replica whose store was down flushes old cells after their hour (and day) was
    compacted: they are counted at once, once, and folded by the next run."""
    now = time.time()
    rows = RollupRows(store)
    minutes = minute_rows(now, 300, seed=5, days=40)
    await rows.add([as_tuple(r) for r in minutes])
    compactor = Compactor(rows, KEPT, clock=lambda: now)
    await compactor.compact()
    await compactor.prune()
    hours = await count(store, RollupHour)
    # late: 20 days ago (its minutes long pruned, its day compacted), 2 days ago, 2 hours ago
    late = minute_rows(now - 20 * 86400, 20, seed=6, days=0.5) + \
        minute_rows(now - 2 * 86400, 20, seed=7, days=1) + minute_rows(now - 7200, 5, seed=8,
                                                                        days=0.02)
    await rows.add([as_tuple(r) for r in late])
    await same_as_minutes(store, minutes + late, now)
    folded = await compactor.compact()
    assert folded["minute"] == len(late) and folded["hour"] > 0
    assert await count(store, RollupHour) > hours  # new rows for hours that had some
    await same_as_minutes(store, minutes + late, now)


async def test_replicas_compacting_at_once_fold_each_row_once(
        store: Store) -> None:  # noqa: F811
    now = time.time()
    rows = RollupRows(store)
    minutes = minute_rows(now, 2000, seed=9, days=3)
    await rows.add([as_tuple(r) for r in minutes])
    replicas = [Compactor(RollupRows(store), KEPT, clock=lambda: now, batch=150)
                for _ in range(4)]
    for _ in range(50):  # PostgreSQL: each takes other rows; SQLite: they wait their turn
        done = await asyncio.gather(*(c.compact() for c in replicas))
        if all(d == {"minute": 0, "hour": 0} for d in done):
            break
    else:
        pytest.fail("compaction never finished")
    await same_as_minutes(store, minutes, now)
    async with store.session() as s:
        in_hours = await s.scalar(select(func.sum(RollupHour.requests)))
        in_days = await s.scalar(select(func.sum(RollupDay.requests)))
    closed_hour = int((now - 20) // 3600) * 60
    closed_day = int((now - 20) // 86400) * 1440
    assert in_hours == sum(r.requests for r in minutes if r.minute < closed_hour)
    assert in_days == sum(r.requests for r in minutes if r.minute < closed_day)


async def test_a_store_that_is_down_only_delays_compaction(
        caplog: pytest.LogCaptureFixture) -> None:
    down = Store("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    compactor = Compactor(RollupRows(down), KEPT, every=0.01)
    with caplog.at_level(logging.WARNING, "gatehouse.telemetry"):
        await compactor.start()
        await asyncio.sleep(0.3)
        await compactor.aclose()
    assert "compaction did not finish" in caplog.text  # logged, and the loop lived on
    assert caplog.text.count("compaction did not finish") >= 2
    await down.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_migration_keeps_existing_minute_rows_foldable(kind: str, tmp_path: Path) -> None:
    """A store at 0005 with minute rows upgrades: the rows are "not compacted yet", get folded
    by the next run; and the migration goes back down."""
    async for db in bare_store(kind, str(tmp_path)):
        await migrate_to(db, "0005_rollups")
        now = time.time()
        minutes = minute_rows(now - 86400, 30, seed=11, days=0.5)
        async with db.engine.begin() as conn:  # as 0005 wrote them: no compacted column
            await conn.exec_driver_sql(
                "INSERT INTO rollup_minute (minute, component, model, tier, org, project, "
                "error_class, requests, prompt_tokens, completion_tokens, admission_wait_ms, "
                "latency, ttfb) VALUES " + ", ".join(
                    "(" + ", ".join(repr(v) for v in as_tuple(r)) + ")" for r in minutes))
        await migrate_to(db, "head")
        folded = await Compactor(RollupRows(db), KEPT, clock=lambda t=now: t).compact()
        assert folded["minute"] == len(minutes)
        await same_as_minutes(db, minutes, now)
        await migrate_to(db, "0005_rollups", down=True)
