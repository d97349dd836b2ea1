#!/usr/bin/env python
"""What one more ban (and one lifted) costs the event loop while thousands are banned: the
mirror every replica keeps of the edge's bans (gatehouse/edge/bans.py), applied as a ban's
broadcast is heard. In-process, memory state, no server; medians over the runs; this tree and,
with ``--base``, another commit's in a child process each, one after the other.

    .venv/bin/python bench/bans.py                    # 1,000 / 5,000 / 20,000 bans
    .venv/bin/python bench/bans.py --base 3581d6e     # and that commit's, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ab
import overhead

SIZES = (1000, 5000, 20000)
# run in a child with PYTHONPATH at the tree: prints {size: [ban ms, lift ms]}
PROBE = """
import asyncio, json, statistics, sys, time
from gatehouse.config import DetectorSettings
from gatehouse.edge.bans import Ban, Bans
from gatehouse.state import open_state

def address(n):
    return f"100.{64 + n // 65536}.{n // 256 % 256}.{n % 256}"

async def main(sizes, runs):
    out = {}
    for size in sizes:
        bans = Bans(open_state("memory://"), DetectorSettings())
        # held at once, as a load makes them (one by one would cost the old code n squared)
        bans.mirror = {address(n): Ban(address(n), "attack", 2e9) for n in range(size)}
        bans._index()
        made, lifted = [], []
        for n in range(runs):
            subject = f"203.0.{n // 256}.{n % 256}"
            t = time.perf_counter()
            bans._remember(Ban(subject, "one more", 2e9))
            made.append(time.perf_counter() - t)
            t = time.perf_counter()
            bans._forget(subject)
            lifted.append(time.perf_counter() - t)
        out[size] = [statistics.median(made) * 1e3, statistics.median(lifted) * 1e3]
    print(json.dumps(out))

asyncio.run(main([int(s) for s in sys.argv[1].split(",")], int(sys.argv[2])))
"""


def measure(root: Path, sizes: tuple[int, ...], runs: int) -> dict[str, list[float]]:
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([overhead.repo_python(), "-c", PROBE, ",".join(map(str, sizes)),
                           str(runs)], env=env, cwd=root, capture_output=True, text=True,
                          timeout=1800, check=True)
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="a commit to measure beside this tree")
    p.add_argument("--runs", type=int, default=21, help="bans made and lifted per size")
    args = p.parse_args(argv)
    trees = {"this": overhead.ROOT}
    if args.base:
        trees["base"] = ab.base_tree(args.base)[0]
    found = {name: measure(root, SIZES, args.runs) for name, root in trees.items()}
    print(f"\n## One ban more, one lifted, among many ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{overhead.machine()}; median of {args.runs}; the event loop is held this long)\n")
    print("| bans held | " + " | ".join(f"{n}: ban / lift" for n in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for size in SIZES:
        cells = [f"{found[n][str(size)][0]:.3f} / {found[n][str(size)][1]:.3f} ms"
                 for n in trees]
        print(f"| {size:,} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
