#!/usr/bin/env python
"""How long the event loop is held while the request log writes a second's worth of records.

The request log is flushed once a second in the worker's own event loop (its writer thread,
for SQLite, holds the GIL while it binds the values): every request that arrives meanwhile
waits. At 500 req/s a flush of 500 records held the loop 5-8 ms once a second — ~1 % of
requests, the p99. This measures it in process, without a server: a ticker task runs a turn of
the loop after another and notes the longest gap between two (the loop's stall), while ``RequestLog.flush`` writes N
records (``--rate``, one second's) to a fresh store: the worst gap per flush, and (in flushes
without the ticker) the flush's time and CPU per record; medians over ``--flushes`` each.

    .venv/bin/python bench/flush_stall.py                     # SQLite, 500 records a flush
    .venv/bin/python bench/flush_stall.py --rate 2000
    .venv/bin/python bench/flush_stall.py --postgres postgresql+asyncpg://postgres@127.0.0.1/test

No traffic; the store is bench/.work/flush-stall/ (SQLite) or a schema of its own, dropped at
the end (PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from request_log import make

from gatehouse.store.db import Store
from gatehouse.store.requests import RequestRows
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.requestlog import RequestLog


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """The loop's turns, back to back (the loop's timers have 1 ms steps: too coarse): the
    longest gap between two is the longest the loop could not run."""
    clock = time.perf_counter
    last = clock()
    while not stop.is_set():
        await asyncio.sleep(0)
        t = clock()
        lags.append(t - last)
        last = t


async def run(args: argparse.Namespace) -> int:
    schema = None
    if args.postgres:
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        schema = f"flush_stall_{random.randrange(10**9)}"
        admin = create_async_engine(args.postgres)
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = args.postgres
    else:
        work = ROOT / "bench" / ".work" / "flush-stall"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        url = f"sqlite+aiosqlite:///{work}/log.db"
    store = Store(url, schema=schema)
    try:
        await store.migrate()
        log = RequestLog(RequestRows(store), Metrics(), size=10**6, keep_days=1,
                         sample_above=10**9)
        rng = random.Random(1)
        worst: list[float] = []
        took: list[float] = []
        cpu: list[float] = []
        n = 0
        for i in range(2 * args.flushes + 1):
            for _ in range(int(args.rate)):
                log.add(make(n, rng, time.time()))
                n += 1
            # odd flushes: the stall, with the ticker; even ones: time and CPU, without it
            # (the first prepares the statements: not counted)
            lags: list[float] = []
            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(lags, stop)) if i % 2 else None
            await asyncio.sleep(0.01)
            t, c = time.perf_counter(), time.process_time()
            await log.flush()
            took_s, cpu_s = time.perf_counter() - t, time.process_time() - c
            stop.set()
            if tick is not None:
                await tick
                worst.append(max(lags))
            elif i:
                took.append(took_s)
                cpu.append(cpu_s)
        print(f"{'PostgreSQL' if args.postgres else 'SQLite'}, {int(args.rate):,} records a "
              f"flush, {args.flushes} flushes: loop held at most {statistics.median(worst) * 1e3:.2f} "
              f"ms per flush (median; worst {max(worst) * 1e3:.2f}), a flush takes "
              f"{statistics.median(took) * 1e3:.1f} ms, {statistics.median(cpu) * 1e6 / args.rate:.0f} "
              "µs of CPU a record")
    finally:
        await store.aclose()
        if schema:
            async with admin.begin() as conn:
                await conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            await admin.dispose()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0, help="records a flush (a second's)")
    ap.add_argument("--flushes", type=int, default=15)
    ap.add_argument("--postgres", help="a PostgreSQL URL (sqlalchemy form) instead of SQLite")
    args = ap.parse_args()
    import uvloop

    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
