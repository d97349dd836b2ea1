#!/usr/bin/env python
"""How long CLI commands take: ``gatehouse version``, ``--help``, ``check`` and ``keys list``
(on a store made by ``gatehouse init`` in a temporary directory), each run several times in
a fresh interpreter, medians of wall time and of CPU time (user + system), with the number of
modules each imported — against issue 19's targets (version / --help ≤ 150 ms, keys list
≤ 400 ms).

    .venv/bin/python bench/cli.py               # 9 runs per command
    .venv/bin/python bench/cli.py --quick       # 3 runs
    .venv/bin/python bench/cli.py --root /path/to/another/checkout   # e.g. a before/after

Runs the command as ``python -m gatehouse`` with PYTHONPATH set to the tree; nothing starts a
server or touches the network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

TARGETS_MS = {"version": 150, "--help": 150, "keys list": 400}
# prints how many modules the command imported (stderr, after the command's own output)
COUNT = ("import atexit, sys; atexit.register(lambda: print('modules', len(sys.modules), "
         "file=sys.stderr)); import runpy; sys.argv[0] = 'gatehouse'; "
         "runpy.run_module('gatehouse', run_name='__main__')")


def run(py: str, root: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one run. Waited for with a blocking ``wait4`` (which also gives the
    child's CPU time): ``subprocess.run(timeout=…)`` polls the child with sleeps growing to
    50 ms, which put every wall time on a 50-ms step (465, 516, 566 … ms)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([py, "-m", "gatehouse", *args], env=env, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    guard = threading.Timer(120, proc.kill)  # bounded: a hung command is killed
    guard.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        guard.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args)
    return wall, usage.ru_utime + usage.ru_stime


def modules(py: str, root: Path, args: list[str], env: dict[str, str]) -> int:
    done = subprocess.run([py, "-c", COUNT, *args], env=env, cwd=root, capture_output=True,
                          text=True, timeout=120, check=True)
    return int(done.stderr.strip().splitlines()[-1].split()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 runs per command")
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--root", type=Path, default=overhead.ROOT, help="the tree to time")
    p.add_argument("--json", type=Path, default=overhead.BENCH / "results" / "cli.json")
    args = p.parse_args(argv)
    runs = 3 if args.quick else args.runs
    py = overhead.repo_python()
    env = dict(os.environ, PYTHONPATH=str(args.root), COLUMNS="100")
    # an installed gatehouse runs from bytecode (pip compiles it); with this set (some shells
    # and containers set it) every run compiled gatehouse's own ~100 modules again: +55 ms
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gatehouse-cli-bench-") as tmp:
        cfg = Path(tmp) / "gatehouse.toml"
        subprocess.run([py, "-m", "gatehouse", "init", "--config", str(cfg)], env=env,
                       cwd=tmp, check=True, capture_output=True, timeout=120)
        commands = {"version": ["version"], "--help": ["--help"],
                    "check": ["check", "--config", str(cfg)],
                    "keys list": ["keys", "list", "--config", str(cfg)]}
        rows: dict[str, dict[str, float]] = {}
        for name, cmd in commands.items():
            run(py, args.root, cmd, env)  # warm the file cache and bytecode
            timings = [run(py, args.root, cmd, env) for _ in range(runs)]
            rows[name] = {"wall_ms": statistics.median(w for w, _ in timings) * 1e3,
                          "cpu_ms": statistics.median(c for _, c in timings) * 1e3,
                          "modules": modules(py, args.root, cmd, env)}
    # the machine may be shared: wall time grows with its load, CPU time and modules much less
    load = {"before": load_before, "after": os.getloadavg()}
    overhead.save_results({"rows": rows, "runs": runs, "root": str(args.root),
                           "load_average_1_5_15": load}, args.json, started)
    print(f"\n## CLI commands ({time.strftime('%Y-%m-%d %H:%M')}, {overhead.machine()}; "
          f"median of {runs} runs; load average {_load(load['before'])} before, "
          f"{_load(load['after'])} after)\n")
    print("| command | wall | CPU | modules imported | target (wall) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        goal = TARGETS_MS.get(name)
        verdict = "" if goal is None else \
            f"≤ {goal} ms: {'PASS' if r['wall_ms'] <= goal else 'MISS'}"
        print(f"| gatehouse {name} | {r['wall_ms']:.0f} ms | {r['cpu_ms']:.0f} ms | "
              f"{r['modules']:.0f} | {verdict} |")
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in avg)


if __name__ == "__main__":
    sys.exit(main())
