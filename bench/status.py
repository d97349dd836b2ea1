#!/usr/bin/env python
"""The status page's numbers (issue 14):

1. answers a second of ``/api/v2/summary.json`` and ``/status`` from one ``gatehouse serve``
   worker (its cached snapshot), closed loop on 127.0.0.1 — the median of repeats; target
   ≥ 5,000/s;
2. the detector with its default numbers on replayed minute counts (the rollups as workers
   write them: every 10 s, the current minute in part): the delay from the onset of a 20 %
   failure to the component leaving ``operational`` (target ≤ 60 s), over onsets at every
   second of a minute; and how many episodes one hour of 1 % background noise opens over
   several seeds (target 0).

    .venv/bin/python bench/status.py                # ~1 minute
    .venv/bin/python bench/status.py --repeats 5 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx

from bench.loadgen import closed_loop
from gatehouse.config import Settings
from gatehouse.status.components import components_of
from gatehouse.status.detector import Counts, Detector, Policy
from tests.support.procs import free_port, write_toml

TARGET_RATE = 5000
TARGET_DELAY = 60.0
FLUSH = 10.0  # rollup rows are written every 10 s
TICK = Settings().status.tick_seconds


def get(host: str, port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: application/json\r\n\r\n").encode()


def serve(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp / "gatehouse.toml"
    write_toml(config, {"storage": {"database_url": f"sqlite+aiosqlite:///{tmp}/gh.db"},
                        "identity": {"require_key": False, "secret_file": str(tmp / "s")},
                        "telemetry": {"access_log": False}})
    proc = subprocess.Popen([sys.executable, "-m", "gatehouse", "serve", "--config",
                             str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/status.json").status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the gateway did not come up")


def throughput(repeats: int, seconds: float) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = serve(Path(tmp))
        try:
            # /healthz: the cheapest answer the gateway makes, the ceiling on this machine now
            for path in ("/healthz", "/api/v2/summary.json", "/status"):
                rates = []
                for _ in range(repeats):
                    result = asyncio.run(closed_loop("127.0.0.1", port,
                                                     get("127.0.0.1", port, path), conns=32,
                                                     duration=seconds, warmup=0.5))
                    assert result.errors == 0, result.first_error
                    rates.append(result.throughput)
                out[path] = statistics.median(rates)
                print(f"  {path:<24} {out[path]:>8,.0f} answers/s (median of {repeats}: "
                      + ", ".join(f"{r:,.0f}" for r in rates) + ")")
        finally:
            proc.terminate()
            proc.wait(10)
    return out


def replay(series: list[tuple[int, int]], rng_offset: float, minutes: int) -> list[float]:
    """Tick every TICK s; each minute's counts are seen as flushed (FLUSH s granularity).
    The times (s from the start) at which the component left operational."""
    det = Detector([c for c in components_of(Settings()) if c.key == "api"], Policy())
    start = 1_800_000_000 - 1_800_000_000 % 60 - 360 * 60
    for m in range(360):  # six healthy hours before
        det.observe("api", start // 60 + m, Counts(600, 0, 0))
    t0 = start + 360 * 60
    left: list[float] = []
    t = t0 + rng_offset
    while t < t0 + minutes * 60:
        now_m = int((t - t0) // 60)
        written = (t - t0) // FLUSH * FLUSH  # what the workers have written so far
        for m in (now_m - 1, now_m):
            if 0 <= m < len(series):
                seen = min(1.0, max(0.0, (written - m * 60) / 60))
                req, bad = series[m]
                det.observe("api", t0 // 60 + m, Counts(round(req * seen), round(bad * seen)))
        for change in det.tick(t):
            if change.old == "operational" and change.new != "under_maintenance":
                left.append(t - t0)
        t += TICK
    return left


def detection() -> None:
    delays = []
    for onset in range(0, 60, 5):
        # 600 requests a minute; from `onset` s into minute 2, 20 % fail
        series = []
        for m in range(12):
            failing = max(0.0, min(1.0, ((m + 1) * 60 - (120 + onset)) / 60))
            series.append((600, round(600 * 0.2 * failing)))
        left = replay(series, 0.0, 12)
        delays.append(left[0] - (120 + onset) if left else float("inf"))
    print(f"  detection delay, 20 % failing (onsets across a minute): median "
          f"{statistics.median(delays):.0f} s, worst {max(delays):.0f} s "
          f"(target ≤ {TARGET_DELAY:.0f} s)")
    false = 0
    for seed in range(10):
        rng = random.Random(seed)
        noise = [(600, sum(rng.random() < 0.01 for _ in range(600))) for _ in range(60)]
        false += len(replay(noise, 0.0, 60))
    print(f"  1 % background noise, 1 hour × 10 seeds: {false} episodes (target 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print("status page, one worker, from the snapshot:")
    rates = throughput(args.repeats, args.seconds)
    print(f"  target ≥ {TARGET_RATE:,}/s: "
          + ("met" if min(rates["/status"], rates["/api/v2/summary.json"]) >= TARGET_RATE
             else "NOT met on this run") + f" (/healthz: {rates['/healthz']:,.0f}/s)")
    print("detector (default numbers):")
    detection()


if __name__ == "__main__":
    main()
