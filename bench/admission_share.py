#!/usr/bin/env python
"""What sharing a model's capacity between replicas would cost: the per-replica share
gatehouse uses vs a Redis-leased semaphore.

Measured side by side, in one process, medians of interleaved repeats:

1. ``Gate`` (gatehouse/admission/gate.py): acquire + release of a slot in-process — what
   every admitted request pays with a fixed share per replica.
2. A Redis-leased semaphore, the usual design (a sorted set of holders scored by lease
   expiry; acquire = one Lua script that drops expired leases, counts and adds; release =
   ZREM), against the real Redis at redis://127.0.0.1:6379/0 — what every admitted request
   would pay with one capacity shared by all replicas, before any lease renewal for long
   streams.
3. Two PINGs on the same client: the floor of two round trips here.

At concurrency 1 (latency per request) and 64 (throughput of one event loop).

    .venv/bin/python bench/admission_share.py          # ~20 s

Keys are under a prefix unique to the run and deleted at the end; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from gatehouse.admission.gate import Gate

ACQUIRE = """
local now, ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return 1
"""
OPS = 2000
CLASSES = {"high": (30.0, 1000), "normal": (5.0, 500), "low": (1.0, 100)}


async def gate_ops(conc: int) -> float:
    gate = Gate(10_000, reserved=0.2, classes=CLASSES)

    async def worker(n: int) -> None:
        for _ in range(n):
            await gate.acquire("normal", "org")
            gate.release("normal", gate.now())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(OPS // conc) for _ in range(conc)))
    return (time.perf_counter() - t0) / OPS


async def redis_ops(r: aioredis.Redis, key: str, conc: int) -> float:
    acquire = r.register_script(ACQUIRE)

    async def worker(w: int, n: int) -> None:
        for i in range(n):
            holder = f"{w}:{i}"
            assert await acquire(keys=[key], args=[time.time(), 600, 10_000, holder]) == 1
            await r.zrem(key, holder)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w, OPS // conc) for w in range(conc)))
    return (time.perf_counter() - t0) / OPS


async def ping_ops(r: aioredis.Redis, conc: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await r.ping()
            await r.ping()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(OPS // conc) for _ in range(conc)))
    return (time.perf_counter() - t0) / OPS


async def main() -> None:
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0", max_connections=128)
    key = f"gatehouse-bench:{secrets.token_hex(4)}:sem"
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(5):
            for conc in (1, 64):
                for name, run in (("gate (per replica)", lambda c: gate_ops(c)),
                                  ("redis semaphore", lambda c: redis_ops(r, key, c)),
                                  ("2 × PING", lambda c: ping_ops(r, c))):
                    results.setdefault((name, conc), []).append(await run(conc))
    finally:
        await r.delete(key)
        await r.aclose()
    table = Table(title=f"Admission cost per request (acquire + release), medians of 5 × "
                        f"{OPS} operations")
    for col in ("", "µs at concurrency 1", "× gate", "µs at concurrency 64", "× gate"):
        table.add_column(col, justify="right" if col else "left")
    base = {c: statistics.median(results[("gate (per replica)", c)]) for c in (1, 64)}
    for name in ("gate (per replica)", "redis semaphore", "2 × PING"):
        cells = []
        for conc in (1, 64):
            v = statistics.median(results[(name, conc)])
            cells += [f"{v * 1e6:,.1f}", f"{v / base[conc]:,.0f}×"]
        table.add_row(name, *cells)
    Console().print(table)
    print("The semaphore needs renewals besides (a lease shorter than the longest stream must "
          "be extended while it runs) and stops admission when Redis is down.")


if __name__ == "__main__":
    asyncio.run(main())
