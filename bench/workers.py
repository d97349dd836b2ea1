#!/usr/bin/env python
"""Does a second worker double the gateway? ``gatehouse serve --workers 1`` vs ``--workers 2``
on the full pipeline with Redis as the state layer (limits counted in Redis, as any
multi-worker deployment runs), side by side in one run, against the machine's ceiling.

On a machine with few cores the client and the upstream take cores too, so "2 workers = 2×"
cannot hold: this measures each process's CPU per request in the same cells and states the
ceiling — the throughput the machine could give if the gateway's workers had every core the
client and the upstream leave them:

    ceiling = cores / (gateway + client + upstream CPU per request)   (every core busy)

and the scaling's share of what that ceiling allows over one worker.

Closed loop (64 keep-alive connections, opened at once), plain requests, repeats
interleaved, medians. ``--shared`` adds two workers sharing one listening socket (``[server]
reuse_port = false``, as before gatehouse/edge/listeners.py) beside the default (a socket per
worker in one SO_REUSEPORT group), with how the connections were split between the workers.
Traffic to 127.0.0.1 only; every child process is stopped at the end.

    .venv/bin/python bench/workers.py              # 5 repeats of 4 s (~2 minutes)
    .venv/bin/python bench/workers.py --quick      # 1 repeat
    .venv/bin/python bench/workers.py --shared     # + 2 workers on one shared socket
    .venv/bin/python bench/workers.py --light      # wrk and nginx as client and upstream

``--light`` measures with the lightest client and upstream this machine has (bench/light.py:
wrk, and nginx answering the test upstream's replies as fixed bodies), a few µs of CPU a
request each instead of ~100 µs together, so more of the two cores is left to the workers
and the ceiling is higher. Redis's CPU per request is measured too (it is part of every
request with Redis state) and counted in the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import light
import loadgen
import overhead
import redis
from overhead import HOST, Children, Target, cpu_seconds, log, quiesce

# the Redis of .ci/services (or GATEHOUSE_BENCH_REDIS)
REDIS = os.environ.get("GATEHOUSE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--shared", action="store_true",
                   help="also 2 workers sharing one socket ([server] reuse_port = false)")
    p.add_argument("--light", action="store_true",
                   help="wrk as the client and nginx (fixed replies) as the upstream")
    p.add_argument("--json", type=Path, default=overhead.BENCH / "results" / "workers.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.light and (missing := light.need_tools()):
        p.error(f"--light needs wrk and nginx: {missing}")
    return args


SHARED = "2 shared"  # two workers on one listening socket ([server] reuse_port = false)


def starter(args: argparse.Namespace) -> Any:
    shared = args.shared

    def start(kids: Children, py: str, up: Target) -> dict[str, Target]:
        if args.light:  # the gateways' upstream is nginx, with the test upstream's replies
            up = args.upstream = light.start_nginx_upstream(kids, up)
        env = {"GATEHOUSE_STORAGE__STATE_URL": REDIS}
        kinds = ["1", "2", *([SHARED] if shared else [])]
        servers = {kind: overhead.start_full_gatehouse(
            kids, py, up, name=f"workers-{kind.replace(' ', '-')}", workers=int(kind[0]),
            env={**env, "GATEHOUSE_SERVER__REUSE_PORT": str(kind != SHARED).lower()})
            for kind in kinds}
        for t in servers.values():
            overhead.smoke(t, stream=not args.light)
        time.sleep(3)  # every worker listening (each listens once its start-up is done)
        return servers
    return start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return overhead.run_bench(args, starter(args), run, render)


def split(t: Target, port: int) -> list[int]:
    """Connections on ``port`` held by each worker of ``t`` (from /proc), most first."""
    per: dict[int, int] = {}
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                established.add(f[9])
    for pid in overhead.tree(t.pid):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        held = sum(1 for link in links if link[8:-1] in established)
        if held:
            per[pid] = held
    return sorted(per.values(), reverse=True)


Driven = tuple[float, int, int, float, list[int]]  # req/s, sent, errors, client CPU s, split


def by_loadgen(runner: asyncio.Runner, t: Target, req: bytes,
               args: argparse.Namespace) -> Driven:
    """A closed loop of bench/loadgen.py in this process (1 s of warm-up), the connections'
    split read half way."""
    c0 = time.process_time()

    async def measured() -> tuple[loadgen.Result, list[int]]:
        task = asyncio.ensure_future(loadgen.closed_loop(
            HOST, t.port, req, conns=args.conns, duration=args.duration, warmup=1.0))
        await asyncio.sleep(1.0 + args.duration / 2)
        seen = split(t, t.port)
        return await task, seen

    res, seen = runner.run(measured())
    return (res.throughput, res.total, res.errors + res.timeouts, time.process_time() - c0,
            seen)


def by_wrk(_runner: asyncio.Runner, t: Target, req: bytes, args: argparse.Namespace) -> Driven:
    """wrk (bench/light.py), the connections' split read half way."""
    wrk, seen = light.run_wrk(t.port, req, conns=args.conns, duration=args.duration,
                              then=lambda: split(t, t.port))
    return wrk.rps, wrk.total, wrk.errors, wrk.cpu_s, seen or []


def run(args: argparse.Namespace, up: Target, servers: dict[int, Target]) -> dict[str, Any]:
    import uvloop

    up = getattr(args, "upstream", None) or up  # --light: nginx
    out: dict[str, Any] = {"cores": os.cpu_count(), "light": args.light,
                           "cells": {n: [] for n in servers}}
    redis_pid = int(redis.Redis.from_url(REDIS).info("server")["process_id"])
    pids = [up.pid, redis_pid, *(t.pid for t in servers.values())]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for t in servers.values():  # warm up (and load each worker's caches)
            req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
            runner.run(loadgen.closed_loop(HOST, t.port, req, conns=args.conns, duration=2,
                                           warmup=0))
        for rep in range(args.repeats):
            order = list(servers) if rep % 2 == 0 else list(reversed(servers))
            for n in order:
                t = servers[n]
                quiesce(pids)
                req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
                g0, u0, r0 = cpu_seconds(t.pid), cpu_seconds(up.pid), cpu_seconds(redis_pid)
                drive = by_wrk if args.light else by_loadgen
                rps, sent, errors, c, seen = drive(runner, t, req, args)
                g, u, r = (cpu_seconds(t.pid) - g0, cpu_seconds(up.pid) - u0,
                           cpu_seconds(redis_pid) - r0)
                sent = max(1, sent)  # CPU covers the warm-up too: per request sent
                cell = {"rps": rps, "errors": errors,
                        "gateway_us": g / sent * 1e6, "upstream_us": u / sent * 1e6,
                        "client_us": c / sent * 1e6, "redis_us": r / sent * 1e6,
                        "split": seen}
                out["cells"][n].append(cell)
                log(f"rep {rep + 1} {n} worker(s): {cell['rps']:,.0f} req/s, CPU per request "
                    f"gateway {cell['gateway_us']:.0f} µs, upstream {cell['upstream_us']:.0f}, "
                    f"client {cell['client_us']:.0f}, Redis {cell['redis_us']:.0f}; connections per worker "
                    f"{'/'.join(map(str, cell['split']))}; errors {cell['errors']}")
    return out


def render(r: dict[str, Any], args: argparse.Namespace) -> None:
    med = statistics.median
    cores = r["cores"]
    m = {n: {k: med(c[k] for c in cells) for k in cells[0] if k != "split"}
         for n, cells in r["cells"].items()}
    splits = {n: ", ".join("/".join(map(str, c["split"])) for c in cells)
              for n, cells in r["cells"].items()}
    print(f"\n## One worker vs two, full pipeline on Redis ({r['when']}, {r['machine']}; "
          f"{args.repeats} repeat(s) of {args.duration:g} s, medians)\n")
    pair = ("wrk and nginx (fixed replies)" if r.get("light")
            else "bench/loadgen.py and the test upstream")
    print(f"Client and upstream: {pair}.\n")
    print("| workers | max req/s | gateway CPU per request | upstream | client | Redis | "
          "machine's ceiling (all cores busy) | connections per worker, each repeat |")
    print("|---|---|---|---|---|---|---|---|")
    ceiling = {}
    for n, v in m.items():
        redis_us = v.get("redis_us", 0.0)
        per_request = (v["gateway_us"] + v["upstream_us"] + v["client_us"] + redis_us) / 1e6
        ceiling[n] = cores / per_request
        print(f"| {n} | {v['rps']:,.0f} | {v['gateway_us']:.0f} µs | {v['upstream_us']:.0f} µs "
              f"| {v['client_us']:.0f} µs | {redis_us:.0f} µs | {ceiling[n]:,.0f} req/s "
              f"| {splits[n]} |")
    scaling = m["2"]["rps"] / m["1"]["rps"]
    allowed = min(2.0, ceiling["2"] / m["1"]["rps"])
    print(f"\n2 workers ÷ 1: **{scaling:.2f}×** (issue 19's goal: ≥ 1.7×). On this machine "
          f"({cores} cores shared with the client, the upstream and Redis) the most a second worker "
          f"could add is {allowed:.2f}× (the ceiling with 2 workers ÷ 1 worker's throughput, "
          f"capped at 2×): the scaling reached {(scaling - 1) / max(1e-9, allowed - 1):.0%} of "
          f"what the cores left allow.\n")
    if SHARED in m:
        print(f"Two workers sharing one socket: {m[SHARED]['rps']:,.0f} req/s "
              f"({m[SHARED]['rps'] / m['1']['rps']:.2f}× one worker).\n")


if __name__ == "__main__":
    sys.exit(main())
