#!/usr/bin/env python
"""What one large answer costs everyone else on the worker.

A bulk-embeddings client (RAG ingestion) asks for the largest answers OpenAI gives — 2,048
inputs × 3,072 dimensions, ~125 MB of JSON — while other users send small chat requests to
the same gateway worker. Whatever the gateway does with a whole answer on its event loop
(checking its shape, reading its usage) is time every other request waits. This runs the
full pipeline (bench/overhead.py's: key, limits, capacity, 10,000 rules) on one worker,
with a probe of small chat requests at a fixed open-loop rate, once quiet and once while a
child process fetches ``--answers`` large embeddings answers back to back; it prints the
probe's p50 / p99 / max both ways and the gateway's CPU per large answer. With ``--base REV``
that commit's gateway runs beside this tree's, measured in turns (order rotated each repeat).

    .venv/bin/python bench/big_answer.py                       # ~1 minute
    .venv/bin/python bench/big_answer.py --base HEAD~1 --repeats 3
    .venv/bin/python bench/big_answer.py --inputs 256 --dimensions 1536   # ~8 MB answers

All traffic goes to 127.0.0.1; bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ab
import loadgen
import overhead
from rich.console import Console
from rich.table import Table

# the large answers, fetched by a child process (its reading is not the probe's loop's)
FETCH = """\
import http.client, json, sys, time
port, key, n, inputs, dims = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), \\
    int(sys.argv[4]), int(sys.argv[5])
body = json.dumps({"model": "m", "input": ["bulk %d" % (i % 64) for i in range(inputs)],
                   "dimensions": dims})
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", "/v1/embeddings", body, {"Authorization": "Bearer " + key,
                                                  "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    print(r.status, len(data), time.perf_counter() - started, flush=True)
    if r.status != 200:
        print(data[:300], file=sys.stderr)
    conn.close()
"""


def probe(target: overhead.Target, rate: float, duration: float) -> loadgen.Result:
    request = loadgen.chat_request(overhead.HOST, target.port, api_key=target.api_key,
                                   stream=False)
    return asyncio.run(loadgen.open_loop(overhead.HOST, target.port, request, rate=rate,
                                         duration=duration, warmup=0.5, max_conns=64))


def cell(target: overhead.Target, args: argparse.Namespace, big: bool
         ) -> tuple[loadgen.Result, float, list[tuple[int, int, float]]]:
    """The probe's result, the gateway's CPU seconds meanwhile, and each large answer's
    (status, bytes, seconds) when ``big``."""
    cpu = overhead.cpu_seconds(target.pid)
    child = None
    if big:
        child = subprocess.Popen(
            [sys.executable, "-c", FETCH, str(target.port), target.api_key, str(args.answers),
             str(args.inputs), str(args.dimensions)], stdout=subprocess.PIPE, text=True)
    result = probe(target, args.rate, args.duration)
    fetched: list[tuple[int, int, float]] = []
    if child is not None:
        out, _ = child.communicate(timeout=300)
        for line in out.splitlines():
            status, size, seconds = line.split()
            fetched.append((int(status), int(size), float(seconds)))
    return result, overhead.cpu_seconds(target.pid) - cpu, fetched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="also run this commit's gateway, side by side")
    ap.add_argument("--inputs", type=int, default=2048)
    ap.add_argument("--dimensions", type=int, default=3072)
    ap.add_argument("--answers", type=int, default=3, help="large answers per cell")
    ap.add_argument("--rate", type=float, default=200.0, help="probe requests a second")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of probe per cell")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    py = overhead.repo_python()
    kids = overhead.Children()
    here = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=overhead.ROOT,
                          check=False, capture_output=True, text=True).stdout.strip()
    try:
        upstream = overhead.start_upstream(kids, py)
        targets = [overhead.start_full_gatehouse(kids, py, upstream, name="this")]
        labels = {"this": f"this tree ({here})"}
        if args.base:
            root, sha = ab.base_tree(args.base)
            targets.insert(0, overhead.start_full_gatehouse(kids, py, upstream, name="base",
                                                           root=root))
            labels["base"] = f"base {sha}"
        for t in targets:
            overhead.smoke(t)
        rows: dict[tuple[str, bool], list[tuple[loadgen.Result, float,
                                                list[tuple[int, int, float]]]]] = {}
        load_before = os.getloadavg()
        started = time.monotonic()
        for rep in range(args.repeats):
            for t in overhead.rotate(targets, rep):
                for big in (False, True):
                    rows.setdefault((t.key, big), []).append(cell(t, args, big))
        console = Console(width=130)
        size = next((f[1] for cells in rows.values() for c in cells for f in c[2]), 0)
        table = Table(title=f"Probe of small chat requests at {args.rate:,.0f} req/s, quiet "
                            f"and while {args.answers} embeddings answers of {args.inputs:,} × "
                            f"{args.dimensions:,} ({size / 1e6:,.1f} MB each) pass; full "
                            f"pipeline, one worker; median of {args.repeats} repeat(s)")
        for col in ("gateway", "probe p50 quiet / loaded", "probe p99 quiet / loaded",
                    "probe max quiet / loaded", "gateway CPU per large answer",
                    "large answer time", "probe errors"):
            table.add_column(col, justify="right")
        for t in targets:
            quiet, loaded = rows[(t.key, False)], rows[(t.key, True)]

            def ms(cells: list[tuple[loadgen.Result, float, list[tuple[int, int, float]]]],
                   q: float) -> float:
                return statistics.median(c[0].percentile(q) for c in cells) * 1e3

            cpu = statistics.median((lc[1] - qc[1]) / args.answers
                                    for qc, lc in zip(quiet, loaded, strict=True))
            times = [f[2] for c in loaded for f in c[2]]
            statuses = {f[0] for c in loaded for f in c[2]}
            errors = sum(c[0].errors + c[0].timeouts for c in quiet + loaded)
            table.add_row(labels[t.key], f"{ms(quiet, 50):.2f} / {ms(loaded, 50):.2f} ms",
                          f"{ms(quiet, 99):.2f} / {ms(loaded, 99):.2f} ms",
                          f"{ms(quiet, 100):.1f} / {ms(loaded, 100):.1f} ms",
                          f"{cpu * 1e3:,.0f} ms",
                          f"{statistics.median(times):.2f} s" if times else "—",
                          f"{errors}" + ("" if statuses <= {200} else f"; large: {statuses}"))
        console.print(table)
        console.print(f"load average {' / '.join(f'{x:.2f}' for x in load_before)} before, "
                      f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} after; "
                      f"{time.monotonic() - started:.0f} s")
        return 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
