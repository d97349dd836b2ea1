#!/usr/bin/env python
"""Request-log lookups on a full store: N records (1,000,000 by default) in a SQLite file,
then lookups by request id, client request id and Ray ID — as an operator (any org) and as a
customer (scoped to the record's org, and another org's id: the 404 path) — timed one by one.
The target (issue 13): p99 ≤ 50 ms with 1,000,000 records on SQLite.

    .venv/bin/python bench/request_log.py                 # ~1-2 minutes to fill, then lookups
    .venv/bin/python bench/request_log.py --records 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gatehouse.store.db import Store
from gatehouse.store.requests import RequestRows
from gatehouse.telemetry.ids import new_request_id
from gatehouse.telemetry.record import RequestRecord

BATCH = 5000
ORGS = 1000
TARGET_P99_MS = 50.0


def make(n: int, rng: random.Random, start: float) -> RequestRecord:
    ray = os.urandom(8).hex() if n % 20 == 0 else None  # 5 % are edge answers
    return RequestRecord(
        start + n * 0.01, new_request_id(), f"client-{n}" if n % 2 else None, ray, "api",
        "POST", "/v1/chat/completions", "chat.completions", "m", False,
        403 if ray else 200, "error" if ray else "ok", "blocked" if ray else "ok", None, None,
        None, f"org_{rng.randrange(ORGS):04d}", "proj", "key", None, "standard", "10.0.0.1",
        "deny" if ray else "pass", "allowed", 0.1, ["a"], "a", 200, f"up-{n}", 10, 20, 30,
        "upstream", 12.0, 3.0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def main(args: argparse.Namespace) -> int:
    work = ROOT / "bench" / ".work" / "request-log"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = Store(f"sqlite+aiosqlite:///{work}/log.db")
    await store.migrate()
    rows = RequestRows(store)
    rng = random.Random(1)
    start = time.time() - args.records * 0.01
    sample: list[RequestRecord] = []
    t0 = time.perf_counter()
    for first in range(0, args.records, BATCH):
        batch = [make(n, rng, start) for n in range(first, min(args.records, first + BATCH))]
        await rows.add(batch)
        sample += rng.sample(batch, 20)
        sample += rng.sample([r for r in batch if r.ray_id], 5)
    fill = time.perf_counter() - t0
    print(f"filled {args.records:,} records in {fill:.0f} s "
          f"({fill / args.records * 1e6:.0f} µs a row, in batches of {BATCH:,})")
    kinds = {
        "request id": [(r.request_id, None) for r in sample],
        "client request id": [(r.client_request_id, None) for r in sample if r.client_request_id],
        "Ray ID": [(r.ray_id, None) for r in sample if r.ray_id],
        "request id, own org": [(r.request_id, r.org) for r in sample],
        "client request id, own org": [(r.client_request_id, r.org) for r in sample
                                       if r.client_request_id],
        "request id, other org (404)": [(r.request_id, "org_none") for r in sample],
    }
    print(f"\n| lookup ({args.records:,} records, SQLite) | n | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for kind, ids in kinds.items():
        times = []
        for any_id, org in ids[:args.lookups]:
            assert any_id is not None
            t = time.perf_counter()
            found = await rows.find(any_id, org=org)
            times.append((time.perf_counter() - t) * 1000)
            assert bool(found) == (org != "org_none"), (kind, any_id)
        worst = max(worst, pct(times, 99))
        print(f"| {kind} | {len(times)} | {statistics.median(times):.2f} ms | "
              f"{pct(times, 99):.2f} ms | {max(times):.2f} ms |")
    await store.aclose()
    print(f"\np99 target {TARGET_P99_MS:g} ms: {'met' if worst <= TARGET_P99_MS else 'MISSED'}")
    return 0 if worst <= TARGET_P99_MS else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--lookups", type=int, default=500)
    sys.exit(asyncio.run(main(p.parse_args())))
