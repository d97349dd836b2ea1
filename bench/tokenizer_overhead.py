#!/usr/bin/env python
"""What the tokenizer adds per request: the gateway counting prompts with o200k_base (the
default) vs with characters ÷ 4 (the estimate before issue 16), same run.

Starts the test upstream and two gatehouse processes (one worker each, open mode, no limits —
the quota stage still counts every prompt) that differ only in ``[quota] tokenizer``:
``chars`` and ``o200k_base``. With bench/overhead.py's side-by-side measurement
(``paired_added``: interleaved, rotated each repeat), plain requests whose prompt is 1,000
o200k tokens (bench/tokenizer.py's prose-and-code text): the latency each adds over
direct-to-upstream at fixed open-loop rates, and the maximum closed-loop throughput. Prints
medians over the repeats, the o200k/chars ratios and the load average. Goal (issue 16): at most
+5 % added p50 at 500 req/s.

    .venv/bin/python bench/tokenizer_overhead.py            # ~3 minutes
    .venv/bin/python bench/tokenizer_overhead.py --quick    # ~1 minute

All traffic goes to 127.0.0.1; bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
import tokenizer
from rich.console import Console
from rich.table import Table

GOAL = 1.05
TOKENS = 1_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rates", type=float, nargs="+", default=[500.0])
    ap.add_argument("--repeats", type=int)
    args = ap.parse_args()
    repeats, duration = (2, 2.0) if args.quick else (args.repeats or 5, 4.0)
    prompt = tokenizer.prompt(TOKENS)
    py = overhead.repo_python()
    kids = overhead.Children()
    try:
        upstream = overhead.start_upstream(kids, py)
        # the abuse detector off: one client sending thousands a second is this benchmark
        both = '\n[edge.detector]\nenabled = false\n\n[quota]\ntokenizer = '
        before = overhead.start_gatehouse(kids, py, upstream, name="chars",
                                          extra_toml=both + '"chars"\n')
        after = overhead.start_gatehouse(kids, py, upstream, name="o200k",
                                         extra_toml=both + '"o200k_base"\n')
        targets = [upstream, before, after]
        for t in targets[1:]:
            overhead.smoke(t)
        load_before = os.getloadavg()[0]
        paired = overhead.paired_added(targets, args.rates, repeats, duration, prompt)
        console = Console(width=120)
        table = Table(title=f"Added latency over direct upstream, ms: a {TOKENS:,}-token "
                            f"prompt ({len(prompt):,} characters), plain requests, one worker "
                            f"each; median of {repeats} repeats")
        for col in ("req/s", "chars +p50", "o200k +p50", "o200k/chars p50", "chars +p99",
                    "o200k +p99", "o200k/chars p99"):
            table.add_column(col, justify="right")
        verdict = []
        for rate in args.rates:
            b50, a50, b99, a99 = (statistics.median(x[i] for x in paired.added[(key, rate)])
                                  for i, key in ((0, "chars"), (0, "o200k"), (1, "chars"),
                                                 (1, "o200k")))
            ratio = a50 / max(b50, overhead.FLOOR_MS)
            verdict.append((rate, ratio, a50 - b50))
            table.add_row(f"{rate:,.0f}", f"{b50:.3f}", f"{a50:.3f}", f"{ratio:.3f}×",
                          f"{b99:.2f}", f"{a99:.2f}", f"{a99 / max(b99, overhead.FLOOR_MS):.2f}×")
        console.print(table)
        per_repeat = Table(title="Per repeat, added p50 ms (chars / o200k)")
        for rate in args.rates:
            per_repeat.add_column(f"{rate:,.0f} req/s")
        for rep in range(repeats):
            per_repeat.add_row(*(f"{paired.added[('chars', r)][rep][0]:.3f} / "
                                 f"{paired.added[('o200k', r)][rep][0]:.3f}"
                                 for r in args.rates))
        console.print(per_repeat)
        med = {k: statistics.median(v) for k, v in paired.maxima.items()}
        console.print(f"max req/s (closed loop, 64 connections, median): direct "
                      f"{med['direct']:,.0f}, chars {med['chars']:,.0f}, o200k "
                      f"{med['o200k']:,.0f} ({med['o200k'] / med['chars']:.3f}×)")
        cpu = {k: statistics.median(v) for k, v in paired.cpu_us.items()}
        console.print(f"gateway CPU per request (closed loop, median): chars "
                      f"{cpu['chars']:,.0f} µs, o200k {cpu['o200k']:,.0f} µs "
                      f"({cpu['o200k'] / cpu['chars']:.3f}×, {cpu['o200k'] - cpu['chars']:+.0f} µs)")
        for rate, ratio, delta in verdict:
            ok = "PASS" if ratio <= GOAL else "MISS"
            console.print(f"goal: o200k adds ≤ {GOAL:.2f}× what chars adds at p50 at "
                          f"{rate:,.0f} req/s: {ratio:.3f}× ({delta * 1000:+.0f} µs) {ok}")
        for key, n in paired.errors.items():
            if n:
                console.print(f"{key}: {n} error answers (first: {paired.first_errors[key]}) — "
                              "overloaded, its figures at that rate are queueing")
        loads = ", ".join(f"{v:.1f}" for v in [load_before, *paired.loads])
        console.print(f"load average (1 min) before and after each repeat: {loads}")
        console.print(f"{time.strftime('%Y-%m-%d %H:%M')}; {overhead.machine()}")
        return 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
