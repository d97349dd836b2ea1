#!/usr/bin/env python
"""Memory of one gatehouse worker: RSS (and PSS) idle and after load, open mode and the full
pipeline (bench/overhead.py's start_full_gatehouse: key required, request and token limits,
admission capacity, 10,000 edge rules).

Each configuration is started alone (one worker), left idle, measured; then loaded with a
closed loop (plain, then stream; 32 connections, ``--duration`` s each), left to settle,
measured again. ``--malloc-stats`` starts the servers with bench/_malloc_probe.py and
prints, idle and after load, what each allocator holds (pymalloc's arenas, glibc's heap in
use and free, SQLite's memory): where a change in RSS went. ``--tracemalloc`` starts the
servers with bench/_memory_probe.py (tracemalloc from the first import, which inflates RSS:
read its RSS as not comparable) and prints the Python heap's top allocators after load
(``MEMORY_FRAMES=N`` frames a trace, ``MEMORY_SNAPSHOT=FILE`` for the whole snapshot).

    .venv/bin/python bench/memory.py                 # ~1 min
    .venv/bin/python bench/memory.py --only full --tracemalloc
    .venv/bin/python bench/memory.py --only full --malloc-stats
    .venv/bin/python bench/memory.py --root /tmp/base    # another tree (git archive), the same way

All traffic goes to 127.0.0.1; every child is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead as ov

PROBE = ("import sys; sys.path.insert(0, 'bench'); import _memory_probe; "
         "_memory_probe.serve(sys.argv[1:])")
MALLOC_PROBE = ("import sys; sys.path.insert(0, 'bench'); import _malloc_probe; "
                "_malloc_probe.serve(sys.argv[1:])")
ALLOCATOR_LINES = ("# arenas allocated current", "# bytes in allocated blocks",
                   "# bytes in available blocks", "unused pools *", "glibc malloc:", "sqlite:")


def allocators(pid: int, log: Path) -> list[str]:
    """The worker's allocator figures (bench/_malloc_probe.py), from its log."""
    before = log.stat().st_size if log.exists() else 0
    os.kill(pid, signal.SIGUSR2)
    for _ in range(50):  # bounded: 5 s
        time.sleep(0.1)
        text = log.read_bytes()[before:].decode(errors="replace")
        if "sqlite:" in text:
            break
    return [" ".join(line.split()) for line in text.splitlines()
            if line.lstrip().startswith(ALLOCATOR_LINES) or " unused pools * " in line]


def _kb(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(pid: int) -> dict[str, float]:
    """RSS, peak RSS and PSS (MB, 10^6 bytes) summed over the server's process tree."""
    pids = ov.tree(pid)
    return {"rss": sum(_kb(p, "status", "VmRSS") for p in pids) * 1024 / 1e6,
            "hwm": sum(_kb(p, "status", "VmHWM") for p in pids) * 1024 / 1e6,
            "pss": sum(_kb(p, "smaps_rollup", "Pss") for p in pids) * 1024 / 1e6,
            "procs": len(pids)}


def load(target: ov.Target, duration: float) -> int:
    done = 0
    for stream in (False, True):
        req = loadgen.chat_request(ov.HOST, target.port, api_key=target.api_key, stream=stream)
        res = asyncio.run(loadgen.closed_loop(ov.HOST, target.port, req, conns=32,
                                              duration=duration, warmup=0.5))
        if res.errors or not res.completed:
            raise RuntimeError(f"{target.key}: {res.errors} errors ({res.first_error})")
        done += res.completed
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("open", "full"))
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--malloc-stats", action="store_true",
                        help="what each allocator holds, idle and after load")
    parser.add_argument("--root", type=Path, default=ov.ROOT,
                        help="the source tree to run (another commit's, for a before/after)")
    args = parser.parse_args()
    py = ov.repo_python()
    kids = ov.Children()
    launch = PROBE if args.tracemalloc else MALLOC_PROBE if args.malloc_stats else ov.LAUNCH
    rows = []
    try:
        upstream = ov.start_upstream(kids, py)
        for which in ("open", "full"):
            if args.only and args.only != which:
                continue
            name = f"memory-{which}"
            report = ov.WORK / f"{name}.tracemalloc.json"
            env = {"MEMORY_REPORT": str(report)}
            target = (ov.start_gatehouse(kids, py, upstream, name=name, launch=launch, env=env,
                                         root=args.root)
                      if which == "open" else
                      ov.start_full_gatehouse(kids, py, upstream, name=name, launch=launch,
                                              env=env, root=args.root))
            time.sleep(2)
            ov.quiesce([target.pid])
            idle = memory(target.pid)
            log = ov.WORK / f"{name}.log"
            idle_alloc = allocators(ov.tree(target.pid)[-1], log) if args.malloc_stats else []
            served = load(target, args.duration)
            ov.quiesce([target.pid])
            after = memory(target.pid)
            if args.malloc_stats:
                after_alloc = allocators(ov.tree(target.pid)[-1], log)
                print(f"\n{which}: allocators idle -> after load")
                for before_line, after_line in zip(idle_alloc, after_alloc, strict=False):
                    print(f"  {before_line}\n    -> {after_line}")
            rows.append((which, idle, after, served))
            if args.tracemalloc:
                report.unlink(missing_ok=True)
                os.kill(ov.tree(target.pid)[-1], signal.SIGUSR1)
                for _ in range(600):
                    if report.exists() and report.stat().st_size:
                        break
                    time.sleep(0.1)
                time.sleep(0.5)
                data = json.loads(report.read_text())
                print(f"\n{which}: traced Python heap {data['traced_mb']:.1f} MB; top files:")
                for f, mb, n in data["files"][:25]:
                    print(f"  {mb:7.2f} MB {n:8d}  {f}")
                print(f"modules: {data['modules']}; per package: " + ", ".join(
                    f"{name} {n}" for name, n in data["packages"]))
                print("top lines:")
                for f, mb, n in data["lines"][:25]:
                    print(f"  {mb:7.2f} MB {n:8d}  {f}")
            kids.stop(kids.procs.pop()[1])
    finally:
        kids.stop_all()
    load_avg = os.getloadavg()
    print(f"\nload average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}"
          + ("  (tracemalloc on: RSS not comparable)" if args.tracemalloc else ""))
    print(f"{'configuration':<14} {'idle RSS':>9} {'idle PSS':>9} {'after RSS':>10} "
          f"{'after PSS':>10} {'peak':>7} {'procs':>5} {'requests':>9}")
    for which, idle, after, served in rows:
        print(f"{which:<14} {idle['rss']:>6.1f} MB {idle['pss']:>6.1f} MB {after['rss']:>7.1f} MB "
              f"{after['pss']:>7.1f} MB {after['hwm']:>4.0f} MB {after['procs']:>5} "
              f"{served:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
