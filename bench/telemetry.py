#!/usr/bin/env python
"""What telemetry costs: the request log and the minute rollups on vs off, same run, on the
full pipeline (a key required, limits checked, admission capacity set, 10,000 edge rules).

Reuses overhead.py's machinery (children, the test upstream, one-worker gatehouse, loadgen).
Two servers, each on one worker, both pointed at the same upstream:

* ``on``  — the defaults: every request recorded, to the request log and the rollups;
* ``off`` — ``[telemetry] request_log = false``, ``rollups = false``.

The access log is off in both (it is stdout, and its cost is the log pipe's). Measured, repeats
interleaved, medians reported, at fixed open-loop rates (below ``request_log_sample_above``, so
nothing is sampled): server CPU per request, added latency (p50, p99) over direct-to-upstream,
and — for ``on`` — records written vs answers given and records dropped (must be 0).

    .venv/bin/python bench/telemetry.py            # ~3 minutes
    .venv/bin/python bench/telemetry.py --quick    # ~1 minute
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

import edge as edge_bench
import loadgen
import overhead
from overhead import _TICK, HOST, Children, Target, cpu_seconds, log, quiesce

OFF_ENV = {"GATEHOUSE_TELEMETRY__REQUEST_LOG": "false", "GATEHOUSE_TELEMETRY__ROLLUPS": "false"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat, short cells")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rates", type=float, nargs="+", default=[500.0])
    p.add_argument("--json", type=Path,
                   default=overhead.BENCH / "results" / "telemetry.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.duration = 1, 3.0
    return args


def start(kids: Children, py: str, up: Target) -> dict[str, Target]:
    servers: dict[str, Target] = {}
    for key, env in (("on", {}), ("off", OFF_ENV)):
        servers[key] = overhead.start_full_gatehouse(kids, py, up, name=f"telemetry-{key}",
                                                     env=env)
        overhead.smoke(servers[key])
    return servers


def main(argv: list[str] | None = None) -> int:
    return overhead.run_bench(parse_args(argv), start, run, render)


def side_threads_cpu(pid: int) -> float:
    """CPU seconds of the process's threads other than its main (event loop) thread: where
    the store driver's thread (aiosqlite) and any other helper thread spend theirs."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) == pid:
            continue
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def run(args: argparse.Namespace, up: Target, servers: dict[str, Target]) -> dict[str, Any]:
    import uvloop

    out: dict[str, Any] = {"cells": {}, "log": []}
    on = servers["on"]
    pids = [t.pid for t in servers.values()]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        targets = [up, servers["on"], servers["off"]]
        for t in targets:  # warm up
            req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
            runner.run(loadgen.closed_loop(HOST, t.port, req, conns=8, duration=1, warmup=0))
        for rep in range(args.repeats):
            order = targets[rep % 3:] + targets[:rep % 3]
            for rate in args.rates:
                for t in order:
                    quiesce(pids)
                    written0 = edge_bench.metric(on.port, "gatehouse_request_log_written_total")
                    answered0 = edge_bench.metric(on.port, "gatehouse_requests_total")
                    req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
                    cpu0, side0 = cpu_seconds(t.pid), side_threads_cpu(t.pid)
                    res = runner.run(loadgen.open_loop(HOST, t.port, req, rate=rate,
                                                       duration=args.duration))
                    cpu = cpu_seconds(t.pid) - cpu0
                    side = side_threads_cpu(t.pid) - side0
                    cell = {"p50": res.percentile(50) * 1000, "p99": res.percentile(99) * 1000,
                            "cpu_us": cpu / max(1, res.total) * 1e6,
                            "side_us": side / max(1, res.total) * 1e6, "answers": res.completed,
                            "errors": res.errors + res.timeouts}
                    out["cells"].setdefault(f"{rate:g}", {}).setdefault(t.key, []).append(cell)
                    log(f"rep {rep + 1} {rate:>6g}/s {t.key:<14} p50 {cell['p50']:.2f} ms "
                        f"p99 {cell['p99']:.2f} ms cpu {cell['cpu_us']:.0f} µs/req "
                        f"(other threads {cell['side_us']:.0f}) "
                        f"err {cell['errors']}")
                    if t is on:
                        time.sleep(2.5)  # the request log writes every second
                        written = edge_bench.metric(
                            on.port, "gatehouse_request_log_written_total") - written0
                        # every answer of the cell, its warm-up included
                        answered = edge_bench.metric(
                            on.port, "gatehouse_requests_total") - answered0
                        out["log"].append({"answers": answered, "written": written})
        out["dropped"] = edge_bench.metric(on.port, "gatehouse_request_log_dropped_total")
        out["sampled"] = edge_bench.metric(on.port, "gatehouse_request_log_sampled_total")
    return out


def render(r: dict[str, Any], args: argparse.Namespace) -> None:
    med = statistics.median
    print(f"\n## Telemetry on vs off, full pipeline ({r['when']}, {r['machine']}; "
          f"{args.repeats} repeat(s) of {args.duration:g} s, medians)\n")
    print("| rate | server CPU per request: off → on | of which threads other than the event "
          "loop's: off → on | added p50: off → on | added p99: off → on |")
    print("|---|---|---|---|---|")
    for rate, cells in r["cells"].items():
        d50 = med(c["p50"] for c in cells["direct"])
        d99 = med(c["p99"] for c in cells["direct"])
        side = {k: med(c.get("side_us", 0.0) for c in cells[f"telemetry-{k}"])
                for k in ("off", "on")}
        v = {k: (med(c["cpu_us"] for c in cells[f"telemetry-{k}"]),
                 med(c["p50"] for c in cells[f"telemetry-{k}"]) - d50,
                 med(c["p99"] for c in cells[f"telemetry-{k}"]) - d99) for k in ("off", "on")}
        print(f"| {float(rate):,.0f}/s | {v['off'][0]:.0f} → {v['on'][0]:.0f} µs "
              f"({v['on'][0] / v['off'][0] - 1:+.1%}) | {side['off']:.0f} → {side['on']:.0f} µs "
              f"| {v['off'][1]:+.3f} → {v['on'][1]:+.3f} ms "
              f"| {v['off'][2]:+.3f} → {v['on'][2]:+.3f} ms |")
    answers = sum(c["answers"] for c in r["log"])
    written = sum(c["written"] for c in r["log"])
    print(f"\nrequest log (on): {written:,.0f} records written for {answers:,.0f} answers; "
          f"dropped {r['dropped']:g}, sampled {r['sampled']:g}\n")


if __name__ == "__main__":
    sys.exit(main())
