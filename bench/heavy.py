#!/usr/bin/env python
"""What one heavy request costs everyone else on the worker.

Two kinds (``--kind``):

- ``answer``: a bulk-embeddings client (RAG ingestion) asks for the largest answers OpenAI
  gives — 2,048 inputs × 3,072 dimensions, ~131 MB of JSON. Whatever the gateway does with a
  whole answer on its event loop (checking its shape, reading its usage) is time every other
  request waits.
- ``parts``: a chat request of the largest body the gateway takes (``max_body_bytes``, 10
  MiB) made of tiny content parts — 4,096 messages of ``--parts`` parts each — so that
  every step that walks a body (parsing, checking, collecting and counting its texts) walks
  hundreds of thousands of items. It is sent with ``max_tokens`` 1.

This runs the full pipeline (bench/overhead.py's: key, limits, capacity, 10,000 rules) on one
worker, with a probe of small chat requests at a fixed open-loop rate, once quiet and once
while a child process sends ``--requests`` heavy requests back to back; it prints the probe's
p50 / p99 / max both ways and the gateway's CPU per heavy request. With ``--base REV`` that
commit's gateway runs beside this tree's, measured in turns (order rotated each repeat).

    .venv/bin/python bench/heavy.py                       # ~1 minute
    .venv/bin/python bench/heavy.py --base HEAD~1 --repeats 3
    .venv/bin/python bench/heavy.py --inputs 256 --dimensions 1536   # ~8 MB answers
    .venv/bin/python bench/heavy.py --kind parts --base HEAD~1

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
import orjson
import overhead
from rich.console import Console
from rich.table import Table

# the heavy requests, sent by a child process (its work is not the probe's loop's)
SEND = """\
import http.client, sys, time
port, key, n, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
body = open(sys.argv[5], "rb").read()
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", path, body, {"Authorization": "Bearer " + key,
                                      "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    print(r.status, len(data), time.perf_counter() - started, flush=True)
    if r.status != 200:
        print(data[:300], file=sys.stderr)
    conn.close()
"""


def heavy_body(args: argparse.Namespace) -> tuple[str, bytes]:
    """The heavy request's path and body."""
    if args.kind == "answer":
        return "/v1/embeddings", orjson.dumps({
            "model": "m", "input": [f"bulk {i % 64}" for i in range(args.inputs)],
            "dimensions": args.dimensions})
    part = {"type": "text", "text": "a"}
    return "/v1/chat/completions", orjson.dumps({
        "model": "m", "max_tokens": 1,
        "messages": [{"role": "user", "content": [part] * args.parts}
                     for _ in range(4096)]})


def probe(target: overhead.Target, rate: float, duration: float) -> loadgen.Result:
    request = loadgen.chat_request(overhead.HOST, target.port, api_key=target.api_key,
                                   stream=False)
    return asyncio.run(loadgen.open_loop(overhead.HOST, target.port, request, rate=rate,
                                         duration=duration, warmup=0.5, max_conns=64))


def cell(target: overhead.Target, args: argparse.Namespace, big: bool
         ) -> tuple[loadgen.Result, float, list[tuple[int, int, float]]]:
    """The probe's result, the gateway's CPU seconds meanwhile, and each heavy request's
    (status, bytes answered, seconds) when ``big``."""
    cpu = overhead.cpu_seconds(target.pid)
    child = None
    if big:
        child = subprocess.Popen(
            [sys.executable, "-c", SEND, str(target.port), target.api_key, str(args.requests),
             args.path, str(args.body)], stdout=subprocess.PIPE, text=True)
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
    ap.add_argument("--kind", choices=("answer", "parts"), default="answer")
    ap.add_argument("--inputs", type=int, default=2048, help="answer: embeddings inputs")
    ap.add_argument("--dimensions", type=int, default=3072, help="answer: numbers per input")
    ap.add_argument("--parts", type=int, default=90,
                    help="parts: content parts per message (4,096 messages)")
    ap.add_argument("--requests", type=int, default=3, help="heavy requests per cell")
    ap.add_argument("--rate", type=float, default=200.0, help="probe requests a second")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of probe per cell")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    args.path, body = heavy_body(args)
    args.body = overhead.WORK / f"heavy-{args.kind}.json"
    args.body.parent.mkdir(parents=True, exist_ok=True)
    args.body.write_bytes(body)
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
        heavy = (f"{args.requests} embeddings answers of {args.inputs:,} × "
                 f"{args.dimensions:,} ({size / 1e6:,.1f} MB each) pass" if args.kind == "answer"
                 else f"{args.requests} chat requests of 4,096 × {args.parts:,} parts "
                      f"({len(body) / 1e6:,.1f} MB each) are served")
        table = Table(title=f"Probe of small chat requests at {args.rate:,.0f} req/s, quiet "
                            f"and while {heavy}; full pipeline, one worker; median of "
                            f"{args.repeats} repeat(s)")
        for col in ("gateway", "probe p50 quiet / loaded", "probe p99 quiet / loaded",
                    "probe max quiet / loaded", "gateway CPU per heavy request",
                    "heavy request time", "probe errors"):
            table.add_column(col, justify="right")
        for t in targets:
            quiet, loaded = rows[(t.key, False)], rows[(t.key, True)]

            def ms(cells: list[tuple[loadgen.Result, float, list[tuple[int, int, float]]]],
                   q: float) -> float:
                return statistics.median(c[0].percentile(q) for c in cells) * 1e3

            cpu = statistics.median((lc[1] - qc[1]) / args.requests
                                    for qc, lc in zip(quiet, loaded, strict=True))
            times = [f[2] for c in loaded for f in c[2]]
            statuses = {f[0] for c in loaded for f in c[2]}
            errors = sum(c[0].errors + c[0].timeouts for c in quiet + loaded)
            table.add_row(labels[t.key], f"{ms(quiet, 50):.2f} / {ms(loaded, 50):.2f} ms",
                          f"{ms(quiet, 99):.2f} / {ms(loaded, 99):.2f} ms",
                          f"{ms(quiet, 100):.1f} / {ms(loaded, 100):.1f} ms",
                          f"{cpu * 1e3:,.0f} ms",
                          f"{statistics.median(times):.2f} s" if times else "—",
                          f"{errors}" + ("" if statuses <= {200} else f"; heavy: {statuses}"))
        console.print(table)
        console.print(f"load average {' / '.join(f'{x:.2f}' for x in load_before)} before, "
                      f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} after; "
                      f"{time.monotonic() - started:.0f} s")
        return 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
