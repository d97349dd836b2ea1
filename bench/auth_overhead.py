#!/usr/bin/env python
"""What checking an API key costs: gatehouse with keys required vs gatehouse in open mode.

Starts the test upstream and two gatehouse processes (one worker each) on the same upstream:
``open`` (``require_key = false``: the identity stage runs and admits the call as anonymous)
and ``keyed`` (``require_key = true``, a real key from ``gatehouse keys create``, verified
from the in-memory cache after its first use). Measures, interleaved and repeated, the
latency each adds over direct-to-upstream at fixed open-loop rates and the maximum closed-loop
throughput, and prints medians and the keyed/open ratios. Goal: keyed adds at most 10 % more
than open at p50.

    .venv/bin/python bench/auth_overhead.py            # ~4 minutes
    .venv/bin/python bench/auth_overhead.py --quick    # ~1 minute

All traffic goes to 127.0.0.1; bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
from rich.console import Console
from rich.table import Table

HOST = overhead.HOST
GOAL = 1.10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    args = ap.parse_args()
    repeats, duration = (2, 2.0) if args.quick else (5, 4.0)
    py = overhead.repo_python()
    kids = overhead.Children()
    try:
        upstream = overhead.start_upstream(kids, py)
        open_gh = overhead.start_gatehouse(kids, py, upstream, name="open")
        keyed = overhead.start_gatehouse(kids, py, upstream, name="keyed", require_key=True)
        targets = [upstream, open_gh, keyed]
        for t in targets[1:]:
            overhead.smoke(t)
        paired = overhead.paired_added(targets, args.rates, repeats, duration)
        added, maxima = paired.added, paired.maxima
        assert not paired.errors, paired.first_errors
        table = Table(title=f"Added latency over direct upstream, ms (median of {repeats} "
                            "repeats, plain requests, one worker each)")
        for col in ("req/s", "open +p50", "keyed +p50", "keyed/open p50", "open +p99",
                    "keyed +p99", "keyed/open p99"):
            table.add_column(col, justify="right")
        verdict = []
        for rate in args.rates:
            o50 = statistics.median(a for a, _ in added[("open", rate)])
            k50 = statistics.median(a for a, _ in added[("keyed", rate)])
            o99 = statistics.median(b for _, b in added[("open", rate)])
            k99 = statistics.median(b for _, b in added[("keyed", rate)])
            r50 = k50 / max(o50, 0.05)
            verdict.append((rate, r50))
            table.add_row(f"{rate:,.0f}", f"{o50:.2f}", f"{k50:.2f}", f"{r50:.2f}×",
                          f"{o99:.2f}", f"{k99:.2f}", f"{k99 / max(o99, 0.05):.2f}×")
        console = Console(width=110)
        console.print(table)
        mt = Table(title="Max sustained req/s (closed loop, 64 connections; median)")
        for col in ("direct", "open", "keyed", "keyed/open"):
            mt.add_column(col, justify="right")
        med = {k: statistics.median(v) for k, v in maxima.items()}
        mt.add_row(f"{med['direct']:,.0f}", f"{med['open']:,.0f}", f"{med['keyed']:,.0f}",
                   f"{med['keyed'] / med['open']:.2f}×")
        console.print(mt)
        for rate, ratio in verdict:
            ok = "PASS" if ratio <= GOAL else "MISS"
            console.print(f"goal: keyed adds ≤ {GOAL:.2f}× open's p50 at {rate:,.0f} req/s: "
                          f"{ratio:.2f}× {ok}")
        console.print(f"{time.strftime('%Y-%m-%d %H:%M')}; {overhead.machine()}")
        return 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
