#!/usr/bin/env python
"""What quotas cost: the limiter in-process, Redis round trips per request, and the latency
the quota stage adds to the gateway.

Three parts, in one run, side by side, medians over interleaved repeats:

1. **Limiter decisions per second, in-process.** ``MemoryLimiter`` and ``RedisLimiter`` (the
   real Redis at redis://127.0.0.1:6379/0, keys under a prefix unique to the run) on a
   typical request: 6 counters (RPM, TPM, tokens/day, tokens/month for the key; RPM for the
   org; RPM for the client network), one reserve + one settle per "decision", at concurrency
   1 and 64 (``asyncio.gather``). Two PINGs per pair on the same pool are the floor a Redis
   round trip can reach here.
2. **Redis round trips per request through the real gateway.** A gatehouse with
   ``state_url = redis://…``, limits for the tier of a real key, N requests; counted by Redis
   itself: ``INFO commandstats`` before/after (global: includes whatever else uses this Redis,
   so an idle interval of the same length is measured too) and ``MONITOR`` filtered to the
   gateway's own connections (exact).
3. **Added latency over direct upstream**, quotas on (Redis limiter, limits configured) vs
   quotas off (``[quota] enabled = false``), the same key auth and Redis state in both, at
   fixed open-loop rates, plus the maximum closed-loop throughput; ratios on/off.

    .venv/bin/python bench/quota.py            # ~5-6 minutes
    .venv/bin/python bench/quota.py --quick    # ~1 minute

All traffic goes to 127.0.0.1; bounded in count and time; children are killed at the end;
the counters the run made in Redis are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import loadgen
import overhead
from rich.console import Console
from rich.table import Table

from gatehouse.config import LimitSettings, QuotaSettings, TierSettings
from gatehouse.identity.principal import Principal
from gatehouse.quota.limiter import Ask, Settle
from gatehouse.quota.memory import MemoryLimiter
from gatehouse.quota.policy import Charge, Estimate, charges
from gatehouse.quota.redis import PREFIX, RedisLimiter

HOST = overhead.HOST
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_PORT = 6379
NEAR = 0.8  # an open-loop rate this close to a gateway's max throughput measures its queue
BIG = 10**12  # limits nobody reaches in a benchmark: every decision is "allowed"

# the typical request's limits: 4 for the key, 1 for its org, 1 for the client network
TIER = TierSettings(limits=LimitSettings(requests_per_minute=BIG, tokens_per_minute=BIG,
                                         tokens_per_day=BIG, tokens_per_month=BIG),
                    org_limits=LimitSettings(requests_per_minute=BIG))
QUOTA = QuotaSettings(network_limits=LimitSettings(requests_per_minute=BIG))
LIMITS_TOML = f"""\
[quota.network_limits]
requests_per_minute = {BIG}

[tiers.standard.limits]
requests_per_minute = {BIG}
tokens_per_minute = {BIG}
tokens_per_day = {BIG}
tokens_per_month = {BIG}

[tiers.standard.org_limits]
requests_per_minute = {BIG}
"""


def log(msg: str) -> None:
    overhead.log(msg)


# -- part 1: the limiter in-process ---------------------------------------------------------

def typical_plan(run: str, now: float) -> list[Charge]:
    who = Principal(kind="key", tier="standard", org_id=f"org_bench{run}", org="bench",
                    project_id=f"proj_bench{run}", project="load", key_id=f"key_bench{run}")
    plan = charges(who, TIER, f"bench{run}/32", QUOTA, Estimate(12, 16), now)
    assert len(plan) == 6, [c.ask.key for c in plan]
    return plan


def settles_for(plan: list[Charge]) -> list[Settle]:
    return [Settle(c.ask.key, 1 if c.unit == "requests" else 40, c.window_end) for c in plan]


class PingPair:
    """Two PINGs on the Redis limiter's own pool: the floor of two round trips."""

    name = "2×PING"

    def __init__(self, redis_limiter: RedisLimiter) -> None:
        self._redis = redis_limiter._redis

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float) -> None:
        await self._redis.ping()

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None:
        await self._redis.ping()


async def decisions(limiter: Any, run: str, conc: int, duration: float) -> tuple[int, float]:
    """reserve+settle pairs done by ``conc`` concurrent callers in ``duration`` s."""
    plan = typical_plan(run, time.time())
    asks, settles = [c.ask for c in plan], settles_for(plan)
    stop = time.perf_counter() + duration

    async def caller(w: int) -> int:
        i = 0
        while time.perf_counter() < stop:
            rid = f"b{w}-{i}"
            now = time.time()
            decision = await limiter.reserve(rid, asks, now, 900.0)
            assert decision is None or decision.allowed, decision
            await limiter.settle(rid, settles, now)
            i += 1
        return i

    t0 = time.perf_counter()
    done = sum(await asyncio.gather(*(caller(w) for w in range(conc))))
    return done, time.perf_counter() - t0


def redis_pid() -> int | None:
    out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(REDIS_PORT), "INFO", "server"],
                         capture_output=True, text=True, timeout=10, check=False).stdout
    m = re.search(r"process_id:(\d+)", out)
    return int(m.group(1)) if m else None


def proc_cpu(pid: int | None) -> float:
    """CPU seconds of one process (Redis), 0 when it cannot be read."""
    if pid is None:
        return 0.0
    fields = overhead._stat(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / overhead._TICK


@dataclass
class LimCell:
    limiter: str
    conc: int
    pairs_per_s: float
    trips_per_pair: float | None
    redis_cpu_us: float | None
    client_cpu_us: float


def part1(runner: asyncio.Runner, run: str, repeats: int, duration: float,
          rpid: int | None) -> tuple[list[LimCell], list[str]]:
    """The cells, and the SCAN patterns of the Redis keys it made."""
    mem = MemoryLimiter()
    red = RedisLimiter(REDIS_URL)
    ping = PingPair(red)
    limiters: list[Any] = [mem, red, ping]
    # warm: load the scripts, open the pool
    for lim in limiters:
        runner.run(decisions(lim, run, 64, 0.2))
    cells: list[LimCell] = []
    combos = [(lim, conc) for conc in (1, 8, 64) for lim in limiters]
    for rep in range(repeats):
        k = rep % len(combos)
        for lim, conc in combos[k:] + combos[:k]:
            trips0 = sum(red.round_trips.values())
            cpu0, own0 = proc_cpu(rpid), time.process_time()
            n, took = runner.run(decisions(lim, run, conc, duration))
            own = time.process_time() - own0
            trips = sum(red.round_trips.values()) - trips0  # (by kind since 2026-11-23)
            cpu = proc_cpu(rpid) - cpu0
            cells.append(LimCell(
                lim.name, conc, n / took,
                trips / n if lim is red else None,
                cpu / n * 1e6 if lim is not mem and rpid else None, own / n * 1e6))
        log(f"limiter repeat {rep + 1}/{repeats} done")
    runner.run(red.aclose())
    return cells, [f"{PREFIX}q:*bench{run}*"]  # every counter of the run: key, org, network


# -- gatehouse with Redis state and limits ---------------------------------------------------

def start_gh(kids: overhead.Children, py: str, upstream: overhead.Target, *, name: str,
             quota_on: bool) -> overhead.Target:
    """overhead.start_gatehouse(require_key=True) with Redis state and the limits of the
    key's tier (``standard``) configured; ``quota_on`` sets ``[quota] enabled``."""
    return overhead.start_gatehouse(
        kids, py, upstream, name=name, require_key=True, org_tier="standard",
        extra_toml=f"""
[storage]
state_url = "{REDIS_URL}"

[quota]
enabled = {"true" if quota_on else "false"}

{LIMITS_TOML}""")


# -- part 2: round trips per request, counted by Redis ---------------------------------------

def commandstats() -> Counter[str]:
    out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(REDIS_PORT), "INFO",
                          "commandstats"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return Counter({m.group(1): int(m.group(2))
                    for m in re.finditer(r"cmdstat_(\S+?):calls=(\d+)", out)})


def redis_ports_of(pid: int) -> set[int]:
    """Local ports of the TCP connections the process tree holds to Redis."""
    inodes: set[str] = set()
    for p in overhead.tree(pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if int(f[2].rsplit(":", 1)[1], 16) == REDIS_PORT and f[9] in inodes:
                    ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


_MON = re.compile(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"(.*)$')


@dataclass
class Trips:
    n: int
    raw: Counter[str]          # INFO commandstats delta over the measured window
    idle: Counter[str]         # same, over an idle window of the same length
    gateway: Counter[str]      # MONITOR, only the gateway's own connections
    gateway_keys: set[str]     # counter keys the gateway's scripts named


async def _send(t: overhead.Target, n: int, rate: float) -> loadgen.Result:
    req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
    return await loadgen.open_loop(HOST, t.port, req, rate=rate, duration=n / rate,
                                   warmup=0.0, max_conns=64)


def part2(kids: overhead.Children, runner: asyncio.Runner, gh: overhead.Target,
          n: int) -> Trips:
    rate = 250.0
    window = n / rate + 0.6
    # warm: the key cache, the scripts, the pool
    runner.run(_send(gh, 50, rate))
    overhead.quiesce([gh.pid])
    before = commandstats()
    time.sleep(window)
    idle = commandstats() - before
    idle["info"] = max(0, idle["info"] - 1)
    mon = kids.start("redis-monitor", ["redis-cli", "-h", HOST, "-p", str(REDIS_PORT),
                                       "monitor"])
    path = overhead.WORK / "redis-monitor.log"
    deadline = time.monotonic() + 10
    while not path.read_bytes().startswith(b"OK") and time.monotonic() < deadline:
        time.sleep(0.05)
    ports = redis_ports_of(gh.pid)
    before = commandstats()
    res = runner.run(_send(gh, n, rate))
    time.sleep(0.5)  # answers are in; settles ran before each answer's last byte
    raw = commandstats() - before
    raw["info"] = max(0, raw["info"] - 1)
    raw["monitor"] = 0
    ports |= redis_ports_of(gh.pid)
    kids.stop(mon)
    kids.procs = [(name, p) for name, p in kids.procs if p is not mon]
    if res.completed != n or res.errors:
        raise RuntimeError(f"round-trip count: {res.completed}/{n} answered, "
                           f"{res.errors} errors ({res.first_error})")
    gateway: Counter[str] = Counter()
    keys: set[str] = set()
    for line in path.read_text(errors="replace").splitlines():
        m = _MON.match(line)
        if not m or m.group(1) == "lua":
            continue
        addr = m.group(1)
        if ":" in addr and int(addr.rsplit(":", 1)[1]) in ports:
            cmd = m.group(2).lower()
            gateway[cmd] += 1
            if cmd in ("evalsha", "eval"):
                keys.update(re.findall(r'"(gatehouse:q:[^"]+)"', m.group(3)))
    return Trips(n, raw, idle, gateway, keys)


# -- part 3: added latency, quotas on vs off ---------------------------------------------------

def part3(runner: asyncio.Runner, targets: list[overhead.Target], rates: list[float],
          repeats: int, duration: float, rpid: int | None,
          ) -> tuple[dict[tuple[str, float], list[tuple[float, float]]],
                     dict[str, list[float]], dict[str, list[tuple[float, float]]],
                     dict[tuple[str, float], int]]:
    pids = [t.pid for t in targets]
    added: dict[tuple[str, float], list[tuple[float, float]]] = {}
    maxima: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}  # (gateway µs/req, redis µs/req)
    sat: dict[tuple[str, float], int] = {}  # (target, rate) → repeats that fell behind
    for t in targets:
        req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
        runner.run(loadgen.closed_loop(HOST, t.port, req, conns=8, duration=1.0, warmup=0.0))
    for rep in range(repeats):
        order = overhead.rotate(targets, rep)
        for t in order:
            overhead.quiesce(pids)
            req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
            c0, r0 = overhead.cpu_seconds(t.pid), proc_cpu(rpid)
            res = runner.run(loadgen.closed_loop(HOST, t.port, req, conns=64,
                                                 duration=duration, warmup=0.5))
            c1, r1 = overhead.cpu_seconds(t.pid), proc_cpu(rpid)
            if res.errors:
                raise RuntimeError(f"{t.key}: {res.errors} errors ({res.first_error})")
            maxima.setdefault(t.key, []).append(res.throughput)
            total = max(1, res.total)  # warm-up included: CPU was read over the whole run
            cpu.setdefault(t.key, []).append(((c1 - c0) / total * 1e6,
                                              (r1 - r0) / total * 1e6))
        for rate in rates:
            lat: dict[str, tuple[float, float]] = {}
            for t in order:
                overhead.quiesce(pids)
                req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
                res = runner.run(loadgen.open_loop(
                    HOST, t.port, req, rate=rate, duration=max(duration, 600 / rate),
                    warmup=0.5, max_conns=256))
                if res.errors:
                    raise RuntimeError(f"{t.key}: {res.errors} errors ({res.first_error})")
                if res.saturated:
                    sat[(t.key, rate)] = sat.get((t.key, rate), 0) + 1
                lat[t.key] = (res.percentile(50) * 1e3, res.percentile(99) * 1e3)
            for key in ("quota-off", "quota-on"):
                added.setdefault((key, rate), []).append(
                    (lat[key][0] - lat["direct"][0], lat[key][1] - lat["direct"][1]))
        log(f"gateway repeat {rep + 1}/{repeats} done")
    return added, maxima, cpu, sat


# -- cleanup ---------------------------------------------------------------------------------

def delete_keys(patterns: list[str]) -> int:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        found: set[str] = set()
        for pat in patterns:
            found.update(k.decode() for k in r.scan_iter(match=pat, count=1000))
        return int(r.delete(*found)) if found else 0
    finally:
        r.close()


# -- main ------------------------------------------------------------------------------------

def ratio(a: float, b: float, floor: float = 0.0) -> str:
    return f"{a / max(b, floor):.2f}×" if b > 0 or floor else "–"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 250.0, 500.0])
    ap.add_argument("--requests", type=int, default=500,
                    help="requests counted for the round trips (part 2)")
    args = ap.parse_args()
    if args.quick:
        repeats, duration, lim_repeats, lim_duration = 1, 2.0, 2, 0.5
    else:
        repeats, duration, lim_repeats, lim_duration = 4, 4.0, 3, 1.5
    args.requests = max(10, min(args.requests, 5000))
    py = overhead.repo_python()
    kids = overhead.Children()
    run = secrets.token_hex(4)
    rpid = redis_pid()
    cleanup: list[str] = [f"{PREFIX}q:*bench{run}*"]
    trips: Trips | None = None
    started = time.monotonic()
    when = time.strftime("%Y-%m-%d %H:%M")
    console = Console(width=120)
    import uvloop

    try:
        with overhead.terminate_on_signals(), \
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            log(f"part 1: limiter in-process (run {run})")
            cells, cleanup = part1(runner, run, lim_repeats, lim_duration, rpid)
            upstream = overhead.start_upstream(kids, py)
            off = start_gh(kids, py, upstream, name="quota-off", quota_on=False)
            on = start_gh(kids, py, upstream, name="quota-on", quota_on=True)
            for t in (off, on):
                overhead.smoke(t)
            log("part 2: round trips per request")
            trips = part2(kids, runner, on, args.requests)
            log("part 3: added latency, quotas on vs off")
            added, maxima, cpu, sat = part3(runner, [upstream, off, on], args.rates,
                                              repeats, duration, rpid)
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        return 130
    finally:
        kids.stop_all()
        patterns = list(cleanup)
        if trips:
            for k in trips.gateway_keys:  # the run's key: its day and month counters stay
                m = re.match(r"gatehouse:q:key:([^:]+):", k)
                if m:
                    patterns.append(f"gatehouse:q:key:{m.group(1)}:*")
        with contextlib.suppress(Exception):
            n = delete_keys(sorted(set(patterns)))
            log(f"deleted {n} Redis keys this run made")

    # -- tables --------------------------------------------------------------------------
    t1 = Table(title=f"1. Limiter decisions in-process: reserve + settle pairs per second, "
                     f"6 counters (median of {lim_repeats} × {lim_duration:g} s)",
               title_justify="left")
    for col in ("limiter", "conc.", "pairs/s", "µs/pair", "vs memory", "round trips/pair",
                "caller CPU µs/pair", "Redis CPU µs/pair"):
        t1.add_column(col, justify="right" if col != "limiter" else "left")
    med: dict[tuple[str, int], float] = {}
    for conc in (1, 8, 64):
        for name in ("memory", "redis", "2×PING"):
            cs = [c for c in cells if c.limiter == name and c.conc == conc]
            rate = statistics.median(c.pairs_per_s for c in cs)
            med[(name, conc)] = rate
            tp = [c.trips_per_pair for c in cs if c.trips_per_pair is not None]
            rc = [c.redis_cpu_us for c in cs if c.redis_cpu_us is not None]
            t1.add_row(name if name != "2×PING" else "2×PING (floor)", str(conc),
                       f"{rate:,.0f}", f"{1e6 / rate:,.1f}",
                       ratio(rate, med[("memory", conc)]),
                       f"{statistics.median(tp):.2f}" if tp else "",
                       f"{statistics.median(c.client_cpu_us for c in cs):,.1f}",
                       f"{statistics.median(rc):.1f}" if rc else "")
    console.print(t1)
    console.print("  memory never yields to the event loop, so its 64 callers run one after "
                  "another. caller CPU: this process (the limiter, redis-py, the event loop); "
                  "Redis CPU: the server's whole CPU (other clients included).")

    assert trips is not None
    n = trips.n
    t2 = Table(title=f"2. Redis commands per request through the gateway "
                     f"({n} requests, quotas on, 6 counters)", title_justify="left")
    for col in ("command", "INFO commandstats Δ", "per req", "idle Δ (same length)",
                "gateway's connections (MONITOR)", "per req"):
        t2.add_column(col, justify="left" if col == "command" else "right")
    names = sorted(set(trips.raw) | set(trips.gateway) | set(trips.idle),
                   key=lambda c: (-trips.gateway[c], -trips.raw[c], c))
    for cmd in names:
        if trips.raw[cmd] or trips.gateway[cmd] or trips.idle[cmd]:
            t2.add_row(cmd, f"{trips.raw[cmd]:,}", f"{trips.raw[cmd] / n:.2f}",
                       f"{trips.idle[cmd]:,}", f"{trips.gateway[cmd]:,}",
                       f"{trips.gateway[cmd] / n:.2f}")
    raw_total = sum(trips.raw.values())
    gw_total = sum(trips.gateway.values())
    t2.add_row("[bold]total[/]", f"{raw_total:,}", f"{raw_total / n:.2f}",
               f"{sum(trips.idle.values()):,}", f"{gw_total:,}", f"[bold]{gw_total / n:.2f}[/]")
    console.print(t2)
    scripts = trips.gateway["evalsha"] + trips.gateway["eval"]
    raw_scripts = trips.raw["evalsha"] + trips.raw["eval"]
    console.print(f"  scripts (evalsha + eval) per request: {scripts / n:.2f} from the "
                  f"gateway's connections, {raw_scripts / n:.2f} in Redis's own counters "
                  "(all clients); settles ride along with the next reservation, so ~1 per request")
    console.print(f"  INFO and MONITOR calls of this script are left out; "
                  f"{len(trips.gateway_keys)} distinct keys named by the scripts "
                  f"(3 per counter)")

    mx = {k: statistics.median(v) for k, v in maxima.items()}
    t3 = Table(title=f"3. Added latency over direct upstream, ms (median of {repeats} "
                     "repeats, plain requests, one worker each, key auth and Redis state "
                     "in both)", title_justify="left")
    for col in ("req/s", "off +p50", "on +p50", "on/off p50", "on − off p50", "off +p99",
                "on +p99", "on/off p99"):
        t3.add_column(col, justify="right")
    for rate in args.rates:
        o50 = statistics.median(a for a, _ in added[("quota-off", rate)])
        q50 = statistics.median(a for a, _ in added[("quota-on", rate)])
        o99 = statistics.median(b for _, b in added[("quota-off", rate)])
        q99 = statistics.median(b for _, b in added[("quota-on", rate)])
        mark = {k: "≥" if 2 * sat.get((k, rate), 0) >= repeats or rate >= NEAR * mx[k] else ""
                for k in ("direct", "quota-off", "quota-on")}
        any_mark = "≥" if mark["quota-on"] or mark["quota-off"] else ""
        t3.add_row(f"{rate:,.0f}", f"{mark['quota-off']}{o50:.2f}", f"{mark['quota-on']}{q50:.2f}",
                   any_mark + ratio(q50, o50, 0.05), f"{any_mark}{q50 - o50:+.2f}",
                   f"{mark['quota-off']}{o99:.2f}", f"{mark['quota-on']}{q99:.2f}",
                   any_mark + ratio(q99, o99, 0.05))
    console.print(t3)
    console.print(f"  ≥: the offered rate is at least {NEAR:.0%} of that gateway's max "
                  "sustained req/s (below), or it fell behind in most repeats: the figure is "
                  "mostly queueing, a lower bound")
    for (key, rate), count in sorted(sat.items()):
        console.print(f"  {key} @ {rate:,.0f} req/s fell behind the offered rate in {count} of "
                      f"{repeats} repeats")
    t4 = Table(title="   Max sustained req/s (closed loop, 64 connections; median), "
                     "CPU µs per request", title_justify="left")
    for col in ("direct", "quota off", "quota on", "on/off", "off gw µs/req", "on gw µs/req",
                "on Redis µs/req"):
        t4.add_column(col, justify="right")
    cm = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
          for k, v in cpu.items()}
    t4.add_row(f"{mx['direct']:,.0f}", f"{mx['quota-off']:,.0f}", f"{mx['quota-on']:,.0f}",
               ratio(mx["quota-on"], mx["quota-off"]), f"{cm['quota-off'][0]:,.0f}",
               f"{cm['quota-on'][0]:,.0f}",
               f"{cm['quota-on'][1]:,.1f}" if rpid else "–")
    console.print(t4)
    console.print(f"  Redis µs/req: Redis's whole CPU during the quota-on runs per request "
                  f"(during quota-off runs: {cm['quota-off'][1]:.1f}, i.e. other clients)")
    console.print(f"{when}; {overhead.machine()}; "
                  f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
