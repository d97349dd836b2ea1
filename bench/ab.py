#!/usr/bin/env python
"""This tree against another commit, side by side in one run: the full pipeline on one worker
each, against the same upstream.

For a change meant to make the gateway faster (issue 19's pass), a before/after measured in
two runs on a shared machine says little; here both gateways run at once and are measured in
turns (bench/overhead.py's ``paired_added``: interleaved, the order rotated each repeat):
closed-loop maximum and server CPU per request, then the latency each adds over
direct-to-upstream at fixed open-loop rates. Prints medians over the repeats and the
this/base ratios, with the load average.

    .venv/bin/python bench/ab.py --base HEAD~1               # ~3 minutes
    .venv/bin/python bench/ab.py --base 50ab348 --repeats 9 --rates 500 1000
    .venv/bin/python bench/ab.py --base HEAD~1 --redis      # both with Redis as the state
                                                            # layer (limits counted there)
    .venv/bin/python bench/ab.py --base HEAD~1 --this-first # this tree's gateway started first

The gateway started second has shown a higher p99 with the same code on both sides (A/A: 1.86×
started second, 0.83× started first; docs/benchmarks.md): read a p99 ratio from a pair of
runs, one each way round.

The base tree is ``git archive`` of that commit into bench/.work/ab-<commit>/ (run with this
tree's virtualenv). All traffic goes to 127.0.0.1; bounded in count and time; children are
killed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
import workers
from rich.console import Console
from rich.table import Table


def base_tree(rev: str) -> tuple[Path, str]:
    """The commit's files, unpacked once under bench/.work/."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=overhead.ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    root = overhead.WORK / f"ab-{sha}"
    if not (root / "gatehouse").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=overhead.ROOT, check=True,
                                 capture_output=True).stdout
        tar = root / "tree.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(root, filter="data")
        tar.unlink()
    build_counter(root)
    return root, sha


def build_counter(root: Path) -> None:
    """Compile the tree's token counter (gatehouse/quota/_o200k.c) in place, as its install
    would: ``git archive`` has only the source, and without the extension the base gateway
    counted o200k with quicktok instead (~50 MB more, another cost per request) — a
    difference between the trees that was not the change under test."""
    if not (root / "gatehouse" / "quota" / "_o200k.c").exists() \
            or any((root / "gatehouse" / "quota").glob("_o200k*.so")):
        return
    done = subprocess.run([overhead.repo_python(), "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=root, check=False, capture_output=True, text=True, timeout=300)
    if done.returncode:  # said, not hidden: the base then counts with quicktok
        print(f"warning: the base tree's token counter did not build ({root}); its gateway "
              f"counts o200k with quicktok:\n{done.stderr[-2000:]}", file=sys.stderr)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare with (e.g. HEAD~1)")
    ap.add_argument("--rates", type=float, nargs="+", default=[500.0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per cell")
    ap.add_argument("--redis", nargs="?", const=workers.REDIS, metavar="URL",
                    help="Redis as both gateways' state layer, as a multi-worker deployment "
                         f"runs (default URL: {workers.REDIS})")
    ap.add_argument("--this-first", action="store_true",
                    help="start this tree's gateway before the base's (to read a bias of the "
                         "order they start in)")
    args = ap.parse_args()
    env = {"GATEHOUSE_STORAGE__STATE_URL": args.redis} if args.redis else None
    base_root, sha = base_tree(args.base)
    here = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=overhead.ROOT,
                          check=False, capture_output=True, text=True).stdout.strip()
    py = overhead.repo_python()
    kids = overhead.Children()
    try:
        upstream = overhead.start_upstream(kids, py)
        started_first = {}
        for name in ("this", "base") if args.this_first else ("base", "this"):
            started_first[name] = overhead.start_full_gatehouse(
                kids, py, upstream, name=name, env=env,
                root=base_root if name == "base" else overhead.ROOT)
        base, this = started_first["base"], started_first["this"]
        for t in (base, this):
            overhead.smoke(t)
        load_before = os.getloadavg()
        started = time.monotonic()
        paired = overhead.paired_added([upstream, base, this], args.rates, args.repeats,
                                       args.duration)
        console = Console(width=120)
        state = "Redis state" if args.redis else "in-process state"
        table = Table(title=f"Full pipeline ({state}), one worker each: base {sha} vs this "
                            f"tree ({here}); median of {args.repeats} repeats")
        for col in ("figure", f"base {sha}", "this", "this ÷ base"):
            table.add_column(col, justify="right")

        def row(name: str, b: float, a: float, fmt: str) -> None:
            table.add_row(name, format(b, fmt), format(a, fmt), f"{a / b:.3f}×" if b else "—")

        row("max req/s (closed loop, 64 conns)", median(paired.maxima["base"]),
            median(paired.maxima["this"]), ",.0f")
        row("server CPU per request, µs", median(paired.cpu_us["base"]),
            median(paired.cpu_us["this"]), ",.0f")
        for rate in args.rates:
            for i, what in ((0, "p50"), (1, "p99")):
                row(f"added {what} at {rate:,.0f} req/s, ms",
                    median([x[i] for x in paired.added[("base", rate)]]),
                    median([x[i] for x in paired.added[("this", rate)]]), ".3f")
        for rate in args.rates:
            pairs = list(zip(paired.added[("base", rate)], paired.added[("this", rate)],
                             strict=True))
            fewer = sum(a[0] < b[0] for b, a in pairs)
            table.add_row(f"added p50 at {rate:,.0f} req/s: this − base, per repeat", "",
                          f"{median([a[0] - b[0] for b, a in pairs]):+.3f} ms",
                          f"lower in {fewer} of {len(pairs)}")
        console.print(table)
        per = Table(title="Per repeat: added p50 ms, base / this (paired: same repeat)")
        per.add_column("req/s", justify="right")
        for rep in range(args.repeats):
            per.add_column(f"#{rep + 1}", justify="right")
        for rate in args.rates:
            pairs = zip(paired.added[("base", rate)], paired.added[("this", rate)], strict=True)
            per.add_row(f"{rate:,.0f}", *(f"{b[0]:.2f} / {a[0]:.2f}" for b, a in pairs))
        console.print(per)
        errors = {k: v for k, v in paired.errors.items() if v}
        console.print(f"errors: {errors or 'none'}; load average "
                      f"{' / '.join(f'{x:.2f}' for x in load_before)} before, "
                      f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} after; "
                      f"{time.monotonic() - started:.0f} s")
        return 1 if errors else 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
