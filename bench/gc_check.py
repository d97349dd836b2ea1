#!/usr/bin/env python
"""Does a gateway request leave reference cycles behind, and what does the collector cost?

Every object in a reference cycle outlives its request until the cyclic garbage collector
finds it; the collections that follow cost CPU on every request and, for the oldest
generation, stall the event loop for tens of milliseconds (which shows up as p99 latency).

This starts the test upstream and one gatehouse worker (through bench/_gc_launcher.py, which
only adds gc instrumentation), then:

1. sends N plain and N streamed requests with cyclic garbage kept aside, and reports the
   cyclic garbage per request, its most common types and one cycle through a RequestContext;
2. runs a fixed 500 req/s load and reports collector time per request and the longest
   pauses per generation.

    .venv/bin/python bench/gc_check.py [--requests 1000]

Exit status 1 when requests leave cyclic garbage. Loopback only; bounded; cleans up.
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

from gatehouse.cli.serve import options_environment


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    py = ov.repo_python()
    ov.WORK.mkdir(parents=True, exist_ok=True)
    gc_log, gc_report = ov.WORK / "gc-events.txt", ov.WORK / "gc-report.json"
    kids = ov.Children()
    try:
        up = ov.start_upstream(kids, py)
        port = ov.free_port()
        cfg = ov.WORK / "gatehouse-gc.toml"
        cfg.write_text(f"""\
[server]
host = "{ov.HOST}"
port = {port}

[telemetry]
access_log = false

[identity]
require_key = false

[edge.detector]
enabled = false

[upstreams.bench]
base_url = "http://{ov.HOST}:{up.port}/v1"

[models.{ov.MODEL}]
backends = [{{ upstream = "bench", model = "{ov.MODEL}" }}]
""")
        env = dict(os.environ, PYTHONPATH=str(ov.ROOT), GC_LOG=str(gc_log),
                   GC_REPORT=str(gc_report),
                   **options_environment(cfg, ov.HOST, port, workers=1))
        proc = kids.start("gatehouse-gc", [py, str(ov.BENCH / "_gc_launcher.py")], env=env)
        ov.wait_healthy(proc, port, "/healthz", 60, "gatehouse-gc")
        import uvloop

        leaky = False
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for stream in (False, True):
                req = loadgen.chat_request(ov.HOST, port, api_key="x", stream=stream)
                runner.run(loadgen.closed_loop(ov.HOST, port, req, conns=4, duration=0.5,
                                               warmup=0.0))
                time.sleep(0.3)
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(0.5)
                rate = 200.0
                res = runner.run(loadgen.open_loop(ov.HOST, port, req, rate=rate,
                                                   duration=args.requests / rate, warmup=0.0))
                time.sleep(0.3)
                gc_report.unlink(missing_ok=True)
                os.kill(proc.pid, signal.SIGUSR2)
                for _ in range(50):
                    if gc_report.exists() and gc_report.stat().st_size:
                        break
                    time.sleep(0.1)
                time.sleep(0.2)
                rep = json.loads(gc_report.read_text())
                n = max(1, res.completed)
                per = rep["objects"] / n
                leaky |= per >= 1
                print(f"{'streamed' if stream else 'plain'}: {res.completed} requests "
                      f"({res.errors} errors) left {rep['objects']} objects in reference "
                      f"cycles = {per:.1f} per request")
                for name, count in rep["types"][:10]:
                    print(f"    {count / n:6.2f}/req  {name}")
                if rep["cycle"]:
                    print("  one cycle through a RequestContext:")
                    for step in rep["cycle"]:
                        print(f"    -> {step}")
            gc_log.write_text("")
            req = loadgen.chat_request(ov.HOST, port, api_key="x", stream=False)
            res = runner.run(loadgen.open_loop(ov.HOST, port, req, rate=args.rate,
                                               duration=args.seconds, warmup=0.5))
        events = [line.split() for line in gc_log.read_text().splitlines() if line.strip()]
        total_ms = sum(float(d) for _, d in events)
        sent = res.total
        print(f"\nat {args.rate:,.0f} req/s for {args.seconds:g} s (plain): p50 "
              f"{res.percentile(50) * 1e3:.2f} ms, p99 {res.percentile(99) * 1e3:.2f} ms; "
              f"collector time {total_ms / sent * 1e3:.0f} µs per request")
        for gen in ("0", "1", "2"):
            d = sorted(float(x) for g, x in events if g == gen)
            if d:
                print(f"    gen {gen}: {len(d)} collections, median {d[len(d) // 2]:.2f} ms, "
                      f"max {d[-1]:.1f} ms")
        return 1 if leaky else 0
    finally:
        kids.stop_all()


if __name__ == "__main__":
    sys.exit(main())
