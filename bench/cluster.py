#!/usr/bin/env python
"""Scale-out on this machine: 1, 2 and 3 gatehouse replicas behind nginx (the shipped
configuration, deploy/nginx/gatehouse.conf) on one PostgreSQL and one Redis, side by side in
one run with the upstream reached directly.

Every replica runs the full pipeline of a cluster: a key required (verified against
PostgreSQL, cached), a request limit checked in Redis (one Lua call per request), the
request log and rollups written to PostgreSQL. Redis is a server of the benchmark's own (so its
command counts are this run's alone); PostgreSQL gets a database of its own, dropped at the end.

Printed, medians over repeats (cells interleaved):

* max throughput through nginx (closed loop, 64 connections) per replica count, and its ratio
  to 1 replica — on a 2-core machine the clients, nginx, the replicas, Redis and PostgreSQL
  share the two cores, so the ceiling is the machine's, and the table says so;
* added latency (p50, p99) over the direct upstream at a fixed open-loop rate;
* Redis round trips per request on the quota path (the replicas'
  ``gatehouse_quota_round_trips_total{kind="reserve"}`` over the requests they answered) and
  Redis's own script count;
* quota exactness under that load: a burst of 3 × the limit on one key through nginx to all
  replicas, admitted vs the limit;
* faults under a steady open-loop load through nginx to the 3 replicas (``--outage`` s each,
  30 by default): one replica killed with SIGKILL, Redis cut (connections reset, new ones
  refused) and PostgreSQL cut, each through a TCP forwarder the benchmark controls, and the
  upstream blackholed (SIGSTOP: connections open, no answer; the calls are whole answers, so
  their 5-s total_timeout bounds them; first_byte_timeout bounds streams only) — answers
  by status during and after, and the recovery time (from the fault's end — the kill for the
  replica — to the last failed answer), the status page's incidents after each; at the end,
  request-log records written vs dropped.

    .venv/bin/python bench/cluster.py            # ~6 minutes
    .venv/bin/python bench/cluster.py --quick    # ~2 minutes (10-s outages)

Needs PostgreSQL on 127.0.0.1:5432 (database ``test``), ``redis-server`` and nginx — what
``.ci/services`` installs. Traffic goes to 127.0.0.1 only; every child process is stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edge as edge_bench
import loadgen
import overhead
from overhead import HOST, WORK, Children, free_port, log, wait_healthy

from tests.support import services
from tests.support.nginx import MAIN, NGINX, shipped_site
from tests.support.tcpproxy import tcp_proxy

LIMIT_RPM = 1_000_000_000  # checked on every request, never reached (the load's limit)
BURST_LIMIT = 300  # the exactness burst's key: requests a minute
SECRET = "bench-cluster-secret-" + "b" * 30


def config(port: int, upstream: int, database: str, redis: str) -> str:
    return f"""\
[server]
host = "{HOST}"
port = {port}

[storage]
database_url = "{database}"
state_url = "{redis}"

[identity]
require_key = true
secret = "{SECRET}"

[edge]
trusted_proxies = ["127.0.0.1/32"]

[telemetry]
access_log = false

[upstreams.bench]
base_url = "http://{HOST}:{upstream}/v1"
# a blackhole is 504 within 5 s: a stream's first token, and a whole (non-streamed) answer —
# what the fault runs send, a few ms of work here. first_byte_timeout does not apply to a whole
# answer; with the default total_timeout (600 s) every call waited out the freeze for a late 200
first_byte_timeout = 5.0
total_timeout = 5.0

[models.m]
backends = [{{ upstream = "bench", model = "m" }}]

[tiers.standard.limits]
requests_per_minute = {LIMIT_RPM}

[tiers.burst.limits]
requests_per_minute = {BURST_LIMIT}
"""




class Cluster:
    def __init__(self, kids: Children, py: str, upstream: int, database: str,
                 redis: str) -> None:
        self.kids, self.py = kids, py
        self.upstream, self.database, self.redis = upstream, database, redis
        self.replicas: list[tuple[int, subprocess.Popen[bytes]]] = []
        self.nginx: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.home = WORK / "cluster"
        self.home.mkdir(parents=True, exist_ok=True)
        self.cfg = self.home / "cli.toml"
        self.cfg.write_text(config(self.port, upstream, database, redis))  # (the CLI's)

    def keys(self) -> tuple[str, str]:
        def cli(*args: str) -> str:
            return overhead.gatehouse_cli(self.py, self.cfg, *args)

        cli("migrate")
        cli("orgs", "create", "bench")
        cli("projects", "create", "bench/load")
        return (cli("keys", "create", "bench/load"),
                cli("keys", "create", "bench/load", "--tier", "burst"))

    def add_replica(self) -> None:
        n = len(self.replicas) + 1
        port = free_port()
        cfg = self.home / f"replica{n}.toml"
        cfg.write_text(config(port, self.upstream, self.database, self.redis))
        proc = self.kids.start(f"replica{n}", [self.py, "-c", overhead.LAUNCH, "serve", "--config",
                                               str(cfg), "--workers", "1"],
                               env=dict(os.environ, PYTHONPATH=str(overhead.ROOT)))
        wait_healthy(proc, port, "/healthz", 60, f"replica{n}")
        self.replicas.append((port, proc))

    def route(self, count: int) -> None:
        """nginx in front of the first ``count`` replicas (restarted with that site)."""
        if self.nginx is not None:
            self.kids.stop(self.nginx)
        tmp = self.home / "nginx"
        tmp.mkdir(exist_ok=True)
        site = shipped_site(self.port, [p for p, _ in self.replicas[:count]])
        # one nginx worker per core, as a deployment would run it
        conf = MAIN.format(tmp=tmp, http=site).replace("master_process off;\n", "").replace(
            "worker_processes 1;", "worker_processes auto;")
        (tmp / "nginx.conf").write_text(conf)
        self.nginx = self.kids.start("nginx", [NGINX, "-p", str(tmp), "-c",
                                               str(tmp / "nginx.conf")])
        wait_healthy(self.nginx, self.port, "/healthz", 15, "nginx")

    def metric(self, name: str, **labels: str) -> float:
        return sum(edge_bench.metric(port, name, **labels) for port, _ in self.replicas)


async def burst(port: int, key: str, count: int, clients: int) -> dict[int, int]:
    """``count`` chat completions from ``clients`` connections through nginx; statuses."""
    request = loadgen.chat_request(HOST, port, api_key=key, stream=False)
    todo = iter(range(count))
    statuses: dict[int, int] = {}

    async def client() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for _ in todo:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


async def steady(port: int, key: str, rate: float, seconds: float,
                 at: dict[str, float], fault: Any) -> list[tuple[float, int]]:
    """Calls at ``rate`` a second for ``seconds`` through nginx, each on a connection of a
    pool; ``fault()`` runs (in a thread) once ``at["start"]`` s have passed. Returns (seconds
    since the start when sent, status; -1: no answer within 15 s or the connection broke)."""
    import httpx

    out: list[tuple[float, int]] = []
    # enough connections that no call waits for one while others hang (a blackhole holds
    # each for the gateway's 5-s first-byte timeout), and a timeout well past that
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=64)
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=15, limits=limits,
                                 headers={"authorization": f"Bearer {key}"}) as client:
        async def one(sent: float) -> None:
            try:
                r = await client.post("/v1/chat/completions", json=body)
                out.append((sent, r.status_code))
            except httpx.HTTPError:
                out.append((sent, -1))

        t0 = time.monotonic()
        tasks, n, faulted = [], 0, None
        while (elapsed := time.monotonic() - t0) < seconds:
            if faulted is None and elapsed >= at["start"]:
                faulted = asyncio.get_running_loop().run_in_executor(None, fault)
            due = n / rate
            if due > elapsed:
                await asyncio.sleep(due - elapsed)
            tasks.append(asyncio.create_task(one(time.monotonic() - t0)))
            n += 1
        await asyncio.gather(*tasks)
        if faulted is not None:
            await faulted
    return sorted(out)


def outcome(answers: list[tuple[float, int]], start: float, end: float) -> dict[str, Any]:
    """Statuses before, during and after the fault; recovery: from the fault's end to the
    last failed answer (0 when none failed after it)."""
    def count(lo: float, hi: float) -> dict[int, int]:
        c: dict[int, int] = {}
        for t, status in answers:
            if lo <= t < hi:
                c[status] = c.get(status, 0) + 1
        return dict(sorted(c.items()))

    failed = [t for t, status in answers if status != 200]
    last = max(failed) if failed else None
    return {"before": count(0, start), "during": count(start, end),
            "after": count(end, float("inf")),
            "recovery": max(0.0, last - end) if last is not None and last >= end else 0.0}


def blackhole(pid: int, seconds: float) -> None:
    """The upstream stops answering (SIGSTOP: its connections stay open, nothing comes back),
    then resumes."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def incidents(port: int) -> list[str]:
    """The status page's incidents (Statuspage v2 JSON) through nginx: name and status."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/api/v2/incidents.json", timeout=5) as r:
        return [f"{i['name']} ({i['status']})" for i in json.loads(r.read())["incidents"]]


def faults(kids: Children, cluster: Cluster, key: str, rate: float, outage: float,
           redis_proxy: Any, pg_proxy: Any, upstream_pid: int) -> dict[str, dict[str, Any]]:
    runner = asyncio.Runner()
    results: dict[str, dict[str, Any]] = {}
    lead, tail = 3.0, 10.0
    plans = {
        "replica killed (SIGKILL)": (0.0, lambda: cluster.replicas[2][1].kill()),
        f"Redis cut {outage:g} s": (outage, lambda: (redis_proxy.cut(), time.sleep(outage),
                                                     redis_proxy.restore())),
        f"PostgreSQL cut {outage:g} s": (outage, lambda: (pg_proxy.cut(), time.sleep(outage),
                                                          pg_proxy.restore())),
        f"upstream blackhole {outage:g} s": (outage, lambda: blackhole(upstream_pid, outage)),
    }
    for name, (length, fault) in plans.items():
        log(f"fault: {name} under {rate:g} calls/s")
        answers = runner.run(steady(cluster.port, key, rate, lead + length + tail,
                                    {"start": lead}, fault))
        results[name] = outcome(answers, lead, lead + length)
        results[name]["incidents"] = incidents(cluster.port)
        log(f"  {results[name]}")
    runner.close()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat, short cells")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rate", type=float, default=300.0, help="open-loop rate for latency")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--outage", type=float, help="seconds each outage lasts (30; --quick 10)")
    p.add_argument("--fault-rate", type=float, default=50.0,
                   help="calls a second during the fault runs")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.duration = 1, 3.0
    if args.outage is None:
        args.outage = 10.0 if args.quick else 30.0
    py = overhead.repo_python()
    counts = (1, 2, 3)
    kids = Children()
    runner = asyncio.Runner()
    results: dict[str, list[Any]] = {}
    redis_port = free_port()
    with services.pg_database() as database, services.private_redis(redis_port), \
            tcp_proxy(HOST, redis_port) as redis_proxy, tcp_proxy(HOST, 5432) as pg_proxy:
        # the replicas reach Redis and PostgreSQL through forwarders the fault runs cut
        redis = f"redis://{HOST}:{redis_proxy.port}/0"
        database = database.replace("@127.0.0.1:5432/", f"@{HOST}:{pg_proxy.port}/")
        up = overhead.start_upstream(kids, py)
        cluster = Cluster(kids, py, up.port, database, redis)
        key, burst_key = cluster.keys()
        for _ in counts:
            cluster.add_replica()
        log(f"3 replicas up; nginx on :{cluster.port}; upstream :{up.port}")
        direct_req = loadgen.chat_request(HOST, up.port, api_key="x", stream=False)
        via_req = loadgen.chat_request(HOST, cluster.port, api_key=key, stream=False)
        for rep in range(args.repeats):
            for n in counts:
                cluster.route(n)
                runner.run(loadgen.closed_loop(HOST, cluster.port, via_req, conns=8,
                                               duration=0.5, warmup=0.2))  # keys cached
                served_before = cluster.metric("gatehouse_requests_total",
                                               endpoint="chat.completions")
                reserves_before = cluster.metric("gatehouse_quota_round_trips_total",
                                                 kind="reserve")
                scripts_before = services.commands(redis_port).get("evalsha", 0)
                top = runner.run(loadgen.closed_loop(HOST, cluster.port, via_req,
                                                     conns=args.conns, duration=args.duration))
                lat = runner.run(loadgen.open_loop(HOST, cluster.port, via_req, rate=args.rate,
                                                   duration=args.duration))
                served = cluster.metric("gatehouse_requests_total",
                                        endpoint="chat.completions") - served_before
                reserves = cluster.metric("gatehouse_quota_round_trips_total",
                                          kind="reserve") - reserves_before
                scripts = services.commands(redis_port).get("evalsha", 0) - scripts_before
                direct = runner.run(loadgen.open_loop(HOST, up.port, direct_req,
                                                      rate=args.rate, duration=args.duration))
                cell = {"rps": top.throughput, "errors": top.errors + lat.errors,
                        "p50": lat.percentile(50) - direct.percentile(50),
                        "p99": lat.percentile(99) - direct.percentile(99),
                        "reserve_per_request": reserves / served if served else float("nan"),
                        "scripts_per_request": scripts / served if served else float("nan")}
                results.setdefault(str(n), []).append(cell)
                log(f"rep {rep + 1} {n} replica(s): {top.throughput:,.0f}/s max, added p50 "
                    f"{cell['p50'] * 1000:.2f} ms p99 {cell['p99'] * 1000:.2f} ms at "
                    f"{args.rate:g}/s; {cell['reserve_per_request']:.3f} reservation calls and "
                    f"{cell['scripts_per_request']:.3f} Redis scripts per request; "
                    f"errors {cell['errors']}")
        # exactness under load: a burst on one key through all replicas, within one minute
        cluster.route(len(counts))
        if time.time() % 60 > 45:
            time.sleep(60.5 - time.time() % 60)
        statuses = runner.run(burst(cluster.port, burst_key, 3 * BURST_LIMIT, 64))
        runner.close()
        fault_results = faults(kids, cluster, key, args.fault_rate, args.outage, redis_proxy,
                               pg_proxy, up.pid)
        time.sleep(6)  # the request logs' batches written after PostgreSQL came back
        alive = [(port, proc) for port, proc in cluster.replicas if proc.poll() is None]
        cluster.replicas = alive
        written = cluster.metric("gatehouse_request_log_written_total")
        dropped = cluster.metric("gatehouse_request_log_dropped_total")
    med = {n: {k: statistics.median(c[k] for c in cells) for k in cells[0]}
           for n, cells in results.items()}
    base = med["1"]["rps"]
    print(f"\n## Replicas behind nginx ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{overhead.machine()}; {args.repeats} repeat(s) of {args.duration:g} s, medians)\n")
    print(f"Everything on this machine's {os.cpu_count()} cores: the load generator, nginx, "
          "the replicas, Redis, PostgreSQL and the upstream. Throughput stops growing when "
          "the cores are full — that ceiling is the machine's, not the design's.\n")
    print(f"| replicas | max req/s (ratio to 1) | added p50 / p99 at {args.rate:g}/s "
          "| Redis reservation calls per request (shared within a turn of the loop) | Redis scripts per request | errors |")
    print("|---|---|---|---|---|---|")
    for n, m in med.items():
        print(f"| {n} | {m['rps']:,.0f} ({m['rps'] / base:.2f}×) | "
              f"+{m['p50'] * 1000:.2f} / +{m['p99'] * 1000:.2f} ms | "
              f"{m['reserve_per_request']:.3f} | {m['scripts_per_request']:.3f} | "
              f"{m['errors']:g} |")
    admitted = statuses.get(200, 0)
    print(f"\nquota exactness under load: {3 * BURST_LIMIT} calls on one key limited to "
          f"{BURST_LIMIT} a minute, 64 connections through nginx to {len(counts)} replicas: "
          f"{admitted} admitted ({admitted - BURST_LIMIT:+d} vs the limit), "
          f"statuses {dict(sorted(statuses.items()))}")
    print(f"\n### Faults under {args.fault_rate:g} calls/s through nginx to {len(counts)} "
          "replicas (statuses: count; -1 = no answer within 15 s or connection broken)\n")
    print("| fault | before | during | after | recovery | status page incidents after |")
    print("|---|---|---|---|---|---|")
    for name, r in fault_results.items():
        print(f"| {name} | {r['before']} | {r['during']} | {r['after']} | "
              f"{r['recovery']:.1f} s | {'; '.join(r['incidents']) or 'none'} |")
    print(f"\nrequest log on the surviving replicas: {written:,.0f} records written, "
          f"{dropped:,.0f} dropped")
    kids.stop_all()
    return 0 if admitted == BURST_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
