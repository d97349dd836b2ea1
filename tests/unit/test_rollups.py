"""Minute rollups: cells per (component, model, tier, org, project, error class), written by
two "replicas" into one store (SQLite and PostgreSQL) summing exactly, filters isolating one
model / tier / project, merged percentiles within one bucket, and nothing lost to a store
error."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import pytest

from gatehouse.store.db import Store
from gatehouse.store.rollups import RollupRows
from gatehouse.telemetry.health import summarize
from gatehouse.telemetry.rollups import Rollups
from tests.unit.test_histogram import exact, within_one_bucket
from tests.unit.test_request_log import record, store  # noqa: F401  (the fixture)


async def test_two_replicas_sum_exactly_and_filters_isolate(store: Store) -> None:  # noqa: F811
    rows = RollupRows(store)
    one, two = Rollups(rows), Rollups(rows)
    rng = random.Random(7)
    minute = int(time.time() // 60) * 60
    sent: list[Any] = []
    for n in range(1200):
        model = rng.choice(["m1", "m2"])
        tier = rng.choice(["standard", "priority"])
        failed = rng.random() < 0.1
        rec = record(n, at=minute + rng.random() * 119, model=model, tier=tier,
                     project=rng.choice(["p1", "p2"]), latency_ms=rng.lognormvariate(3, 1),
                     status=503 if failed else 200,
                     error_class="unavailable" if failed else "ok")
        (one if n % 2 else two).add(rec)
        sent.append(rec)
        if n == 600:  # a flush in the middle: the same cells written in two rows
            await one.flush()
    await one.flush()
    await two.flush()
    start = minute // 60
    whole = summarize(await rows.fetch(start, start + 2))
    assert whole["requests"] == len(sent)
    assert whole["classes"]["unavailable"] == sum(r.status == 503 for r in sent)
    assert whole["prompt_tokens"] == sum(r.prompt_tokens for r in sent)
    latencies = [r.latency_ms for r in sent]
    for q in (50, 95, 99):
        assert within_one_bucket(whole["latency_ms"][f"p{q}"], exact(latencies, q))
    picked = summarize(await rows.fetch(start, start + 2, {"model": "m1", "tier": "priority",
                                                           "project": "p2"}))
    assert picked["requests"] == sum(
        (r.model, r.tier, r.project) == ("m1", "priority", "p2") for r in sent)
    assert summarize(await rows.fetch(start, start + 2, {"org": "org_nobody"}))["requests"] == 0
    with pytest.raises(ValueError, match="dimension"):
        await rows.fetch(start, start + 2, {"key_id": "x"})
    assert await rows.prune("minute", start + 1) == 0  # not compacted: kept
    assert await rows.compact("minute", start + 2) > 0
    assert await rows.prune("minute", start + 1) > 0  # the first minute's rows
    assert summarize(await rows.fetch(start, start + 1))["requests"] == 0


async def test_cells_a_store_refused_are_kept_for_the_next_flush() -> None:
    written: list[Sequence[Any]] = []

    class Flaky(RollupRows):
        fail = True

        async def add(self, rows: Sequence[Sequence[Any]]) -> None:
            if self.fail:
                raise ConnectionError("store down")
            written.extend(rows)

        async def prune(self, before_minute: int) -> int:
            return 0

    rows = Flaky(None)  # type: ignore[arg-type]
    rollups = Rollups(rows)
    for n in range(5):
        rollups.add(record(n))
    await rollups.flush()
    for n in range(5, 8):
        rollups.add(record(n))
    rows.fail = False
    await rollups.flush()
    assert sum(row[7] for row in written) == 8
    assert not rollups.cells
    # a store down for long: only the newest cells are kept, the loss counted
    lost: list[float] = []
    bounded = Rollups(Flaky(None), max_cells=3,  # type: ignore[arg-type]
                      on_drop=lost.append)
    for minute in range(5):
        bounded.add(record(minute, at=minute * 60.0))
        bounded.add(record(10 + minute, at=minute * 60.0 + 1))
    await bounded.flush()
    assert sorted(key[0] for key in bounded.cells) == [2, 3, 4]
    assert lost == [4]
