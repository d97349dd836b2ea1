#!/usr/bin/env python
"""Where a request's time goes inside the gateway: each pipeline stage's ``enter`` and ``exit``
timed in the live worker, under open-loop load (the full pipeline, as bench/overhead.py --full).

The worker runs through bench/_stage_launcher.py, which only wraps each stage's enter and exit
(and the pipeline and the server's handler) in a ``perf_counter``; the wrapping costs ~1 µs
per call, the same in both trees. With ``--base REV`` that commit's tree runs beside this one
(``git archive``, as bench/ab.py) and the two are loaded in turns, so a change's effect per
stage is read side by side in one run. Medians and p90 per stage in µs, over all requests of
all repeats.

    .venv/bin/python bench/stages.py                        # ~30 s
    .venv/bin/python bench/stages.py --base HEAD~1 --repeats 5
    .venv/bin/python bench/stages.py --stream --rate 500

Traffic goes to 127.0.0.1 only, bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead as ov
from rich.console import Console
from rich.table import Table

LAUNCH = ("import sys, runpy; sys.path.insert(0, {bench!r}); "
          "runpy.run_path({bench!r} + '/_stage_launcher.py', run_name='__main__')")


def collect(pid: int, report: Path) -> dict[str, list[float]]:
    report.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(100):
        if report.exists():
            return json.loads(report.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"no stage report from {pid}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="a commit to run beside this tree (e.g. HEAD~1)")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=3.0, help="per repeat and tree")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--funcs", default="", help="also time these: module:name or "
                    "module:Class.name, comma-separated (e.g. gatehouse.quota.stage:"
                    "prompt_texts,gatehouse.quota.stage:QuotaStage.limits)")
    args = ap.parse_args()
    py = ov.repo_python()
    trees: list[tuple[str, Path]] = [("this", ov.ROOT)]
    if args.base:
        import ab

        root, sha = ab.base_tree(args.base)
        trees.insert(0, (f"base {sha}", root))
    kids = ov.Children()
    got: dict[str, dict[str, list[float]]] = {name: {} for name, _ in trees}
    lat: dict[str, list[float]] = {name: [] for name, _ in trees}
    try:
        upstream = ov.start_upstream(kids, py)
        gws = []
        for i, (name, root) in enumerate(trees):
            report = ov.WORK / f"stages-{i}.json"
            env = {"STAGE_REPORT": str(report), "STAGE_FUNCS": args.funcs}
            launch = LAUNCH.format(bench=str(ov.BENCH))
            t = ov.start_full_gatehouse(kids, py, upstream, name=f"stages-{i}", root=root,
                                        env=env, launch=launch)
            ov.smoke(t)
            gws.append((name, t, report))
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for rep in range(args.repeats):
                order = gws if rep % 2 == 0 else gws[::-1]
                for name, t, report in order:
                    req = loadgen.chat_request(ov.HOST, t.port, api_key=t.api_key,
                                               stream=args.stream)
                    runner.run(loadgen.closed_loop(ov.HOST, t.port, req, conns=8,
                                                   duration=0.5, warmup=0.0))
                    collect(t.pid, report)  # the warm-up's times are dropped
                    res = runner.run(loadgen.open_loop(ov.HOST, t.port, req, rate=args.rate,
                                                       duration=args.seconds, warmup=0.0))
                    lat[name] += res.latencies
                    for k, v in collect(t.pid, report).items():
                        got[name].setdefault(k, []).extend(v)
    finally:
        kids.stop_all()
    names = [n for n, _ in trees]
    keys = sorted({k for g in got.values() for k, v in g.items() if v},
                  key=lambda k: -statistics.median(got[names[-1]].get(k) or [0]))
    table = Table(title=f"µs per call, {args.rate:,.0f} req/s open loop, "
                        f"{'streamed' if args.stream else 'plain'}, full pipeline; "
                        f"{args.repeats} × {args.seconds:g} s per tree")
    table.add_column("stage")
    for n in names:
        table.add_column(f"{n} p50", justify="right")
        table.add_column(f"{n} p90", justify="right")
    table.add_column("calls a request", justify="right")
    if len(names) == 2:
        table.add_column("p50 this − base", justify="right")
    requests = len(got[names[-1]].get("gateway.call", [])) or 1
    for k in keys:
        cells = []
        for n in names:
            v = got[n].get(k, [])
            cells += [f"{statistics.median(v):.1f}" if v else "—", f"{pct(v, 90):.1f}"]
        cells.append(f"{len(got[names[-1]].get(k, [])) / requests:.2f}")
        if len(names) == 2:
            a, b = got[names[0]].get(k), got[names[1]].get(k)
            cells.append(f"{statistics.median(b) - statistics.median(a):+.1f}" if a and b
                         else "")
        table.add_row(k, *cells)
    row = []
    for n in names:
        row += [f"{pct(lat[n], 50) * 1e6:.0f}", f"{pct(lat[n], 90) * 1e6:.0f}"]
    row.append("")
    if len(names) == 2:
        row.append(f"{(pct(lat[names[1]], 50) - pct(lat[names[0]], 50)) * 1e6:+.0f}")
    table.add_row("client's latency (whole, with the upstream)", *row)
    Console(width=160).print(table)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
