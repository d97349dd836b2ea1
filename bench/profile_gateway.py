#!/usr/bin/env python
"""Profile the gateway under load with py-spy: where does a request's CPU time go?

Starts the test upstream and one gatehouse worker (as bench/overhead.py does), drives it
with the closed-loop client (64 keep-alive connections, or an open-loop rate with --rate),
samples the worker with ``py-spy record`` and prints the top frames by own ("self") and
inclusive time, plus a collapsed-stack file for flame graphs (speedscope.app, or
``flamegraph.pl``).

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_gateway.py [--stream] [--seconds 10] [--rate 500]
    .venv/bin/python bench/profile_gateway.py --full --rate 500   # the full pipeline
    .venv/bin/python bench/profile_gateway.py --full --rate 500 \
        --env GATEHOUSE_TELEMETRY__REQUEST_LOG=false --env GATEHOUSE_TELEMETRY__ROLLUPS=false

``--full`` is the configuration users run (overhead.start_full_gatehouse: a key required,
limits on, admission capacity, 10,000 edge rules), the same as bench/telemetry.py's and
``bench/overhead.py --full``.

Traffic goes to 127.0.0.1 only and stops by itself; all child processes are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead as ov
import tokenizer


def summarize(collapsed: Path, top: int, full_paths: bool) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        # py-spy frames look like "func (path/to/file.py:123)"
        def norm(f: str) -> str:
            name, _, where = f.partition(" (")
            where = where.rstrip(")")
            path, _, _line = where.rpartition(":")
            if not full_paths:
                for marker in ("site-packages/", "lib/python3"):
                    if marker in path:
                        path = path.split(marker, 1)[1]
                        break
                path = path.replace(str(ov.ROOT) + "/", "")
            return f"{name} ({path})"
        normed = [norm(f) for f in frames]
        own[normed[-1]] += n
        for f in set(normed):
            incl[f] += n
        leaf_file = normed[-1].rpartition("(")[2].rstrip(")")
        by_file[leaf_file] += n
    if not total:
        print("no samples")
        return
    print(f"\n{total} samples\n\n-- own time, top {top} --")
    for f, n in own.most_common(top):
        print(f"{n / total:6.1%}  {f}")
    print(f"\n-- inclusive time, top {top} --")
    for f, n in incl.most_common(top):
        print(f"{n / total:6.1%}  {f}")
    print(f"\n-- own time by file, top {top} --")
    for f, n in by_file.most_common(top):
        print(f"{n / total:6.1%}  {f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", action="store_true")
    p.add_argument("--full", action="store_true",
                   help="the full pipeline (key, limits, capacity, 10,000 edge rules)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for the server through its environment (repeatable)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, help="open loop at this rate instead of closed loop")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--sample-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    p.add_argument("--blocking", action="store_true",
                   help="pause the worker for each sample (exact stacks; without it py-spy "
                        "reads a running process and some stacks come out torn)")
    p.add_argument("--gil", action="store_true",
                   help="only samples of the thread holding the GIL (py-spy --gil)")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--full-paths", action="store_true")
    p.add_argument("--out", type=Path, default=ov.WORK / "gateway-profile.txt")
    p.add_argument("--tokenizer", help="[quota] tokenizer (o200k_base, chars, …)")
    p.add_argument("--prompt-tokens", type=int,
                   help="a prompt of this many o200k tokens (bench/tokenizer.py's text)")
    args = p.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(ov.repo_python()).parent / "py-spy")
    if not Path(pyspy).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    py = ov.repo_python()
    kids = ov.Children()
    try:
        up = ov.start_upstream(kids, py)
        env = dict(e.split("=", 1) for e in args.env)
        if args.tokenizer:  # (through the environment: the full pipeline writes [quota])
            env["GATEHOUSE_QUOTA__TOKENIZER"] = args.tokenizer
        if args.full:
            gh = ov.start_full_gatehouse(kids, py, up, name="profile-full", env=env)
        else:
            gh = ov.start_gatehouse(kids, py, up, env=env,
                                    extra_toml='\n[edge.detector]\nenabled = false\n')
        ov.smoke(gh)
        import uvloop

        content = {"content": tokenizer.prompt(args.prompt_tokens)} if args.prompt_tokens \
            else {}
        req = loadgen.chat_request(ov.HOST, gh.port, api_key=gh.api_key, stream=args.stream,
                                   **content)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(loadgen.closed_loop(ov.HOST, gh.port, req, conns=8, duration=1.0,
                                           warmup=0.0))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            cmd = [pyspy, "record", "--pid", str(gh.pid), "--format", "raw", "--output",
                   str(args.out), "--rate", str(args.sample_rate), "--duration",
                   str(int(args.seconds))]
            if not args.blocking:
                cmd.append("--nonblocking")
            if args.native:
                cmd.append("--native")
            if args.gil:
                cmd.append("--gil")
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            cpu0 = ov.cpu_seconds(gh.pid)
            if args.rate:
                res = runner.run(loadgen.open_loop(ov.HOST, gh.port, req, rate=args.rate,
                                                   duration=args.seconds - 0.5, warmup=0.0))
            else:
                res = runner.run(loadgen.closed_loop(ov.HOST, gh.port, req, conns=args.conns,
                                                     duration=args.seconds - 0.5,
                                                     warmup=0.0))
            cpu = ov.cpu_seconds(gh.pid) - cpu0
            _, err = spy.communicate(timeout=60)
        print(f"{res.throughput:,.0f} req/s, p50 {res.percentile(50) * 1e3:.2f} ms, "
              f"p99 {res.percentile(99) * 1e3:.2f} ms, errors {res.errors}; gateway CPU "
              f"{cpu / max(1, res.total) * 1e6:,.0f} µs/req (under py-spy)")
        if spy.returncode:
            print(err.decode(errors="replace")[-2000:])
        summarize(args.out, args.top, args.full_paths)
        print(f"\ncollapsed stacks: {args.out}")
        return 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    sys.exit(main())
