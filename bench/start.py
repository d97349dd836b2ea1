#!/usr/bin/env python
"""How long ``gatehouse serve`` takes to answer ``/healthz``: on a new store (the first start
on a machine, and every gateway a test starts) and on a store made before (every later start),
each run in turn with another tree's (``--base``), medians of wall time to ready and of the CPU
the process used until then (its own and its waited children's: the migration's fork).

    .venv/bin/python bench/start.py                     # this tree, 9 starts of each kind
    .venv/bin/python bench/start.py --base HEAD~3       # and that commit's, in turns

SQLite store, memory state, the words tokenizer (as the tests' gateways), one worker on
127.0.0.1; every start is stopped (its process group: SIGTERM, then SIGKILL) before the
next; its output is in bench/.work/start.log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ab
import overhead

CONFIG = """[storage]
database_url = "sqlite+aiosqlite:///{dir}/store.db"
[identity]
require_key = false
secret_file = "{dir}/secret"
[edge.detector]
enabled = false
[quota]
tokenizer = "words"
"""


def ticks(pid: int) -> float:
    """CPU seconds of ``pid`` and its waited children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def ready(port: int) -> bool:
    try:
        return overhead.http_get(port, "/healthz", timeout=1.0) == 200
    except OSError:  # not listening yet
        return False


def start(kids: overhead.Children, py: str, root: Path,
          store_dir: Path) -> tuple[float, float]:
    """(seconds to ready, CPU seconds until then) of one ``gatehouse serve``."""
    cfg = store_dir / "gatehouse.toml"
    cfg.write_text(CONFIG.format(dir=store_dir))
    port = overhead.free_port()
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an install runs from bytecode
    t0 = time.perf_counter()
    proc = kids.start("start", [py, "-m", "gatehouse", "serve", "--config", str(cfg),
                                "--port", str(port)], env=env, cwd=root)
    try:
        deadline = t0 + 120
        while not ready(port):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"gatehouse serve ({root}) did not start")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        cpu = ticks(proc.pid)
    finally:
        kids.stop(proc)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--base", help="a commit to time in turns with this tree")
    args = p.parse_args(argv)
    py = overhead.repo_python()
    trees = {"this": overhead.ROOT}
    if args.base:
        trees["base"] = ab.base_tree(args.base)[0]
    started = time.monotonic()
    load_before = os.getloadavg()
    seen: dict[tuple[str, str], list[tuple[float, float]]] = {}
    kids = overhead.Children()  # each start in its own process group, stopped at the end
    with tempfile.TemporaryDirectory(prefix="gatehouse-start-bench-") as tmp:
        for n in range(args.runs + 1):  # the first round warms files and bytecode, unkept
            for name, root in trees.items():
                store_dir = Path(tmp) / f"{name}-{n}"
                store_dir.mkdir()
                new = start(kids, py, root, store_dir)  # a new store
                again = start(kids, py, root, store_dir)  # the same store, made
                shutil.rmtree(store_dir)
                if n:
                    seen.setdefault((name, "new store"), []).append(new)
                    seen.setdefault((name, "store made before"), []).append(again)
    rows = {f"{name}, {kind}": {"ready_ms": statistics.median(w for w, _ in runs) * 1e3,
                                "cpu_ms": statistics.median(c for _, c in runs) * 1e3}
            for (name, kind), runs in seen.items()}
    load = {"before": load_before, "after": os.getloadavg()}
    overhead.save_results({"rows": rows, "runs": args.runs, "base": args.base,
                           "load_average_1_5_15": load},
                          overhead.BENCH / "results" / "start.json", started)
    print(f"\n## gatehouse serve: time to ready ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{overhead.machine()}; median of {args.runs} starts each, in turns; load average "
          f"{' / '.join(f'{v:.2f}' for v in load['before'])} before)\n")
    print("| tree, store | to ready | CPU until ready |")
    print("|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['ready_ms']:.0f} ms | {r['cpu_ms']:.0f} ms |")
    if args.base:
        for kind in ("new store", "store made before"):
            this, base = rows[f"this, {kind}"], rows[f"base, {kind}"]
            print(f"| this ÷ base, {kind} | {this['ready_ms'] / base['ready_ms']:.2f}× | "
                  f"{this['cpu_ms'] / base['cpu_ms']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
