#!/usr/bin/env python
"""What OTLP export costs per request: the same in-process gateway (demo model, httpx's ASGI
transport, no sockets) with ``[telemetry] otlp_endpoint`` set vs unset, rounds interleaved,
CPU time of this process per request (the exporter's threads included: they run here too).
The collector is a tiny OTLP/HTTP sink in a child process, so its CPU is not counted.

    .venv/bin/python bench/otlp.py              # ~1 minute
    .venv/bin/python bench/otlp.py --requests 500 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatehouse.app import create_app
from gatehouse.config import Settings

SINK = """
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")
app = web.Application(); app.router.add_post("/v1/traces", ok); app.router.add_post("/v1/metrics", ok)
web.run_app(app, host="127.0.0.1", port={port}, print=None)
"""
BODY = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


def settings(folder: str, endpoint: str | None) -> Settings:
    telemetry: dict[str, Any] = {"access_log": False, "request_log": False, "rollups": False}
    if endpoint:
        telemetry |= {"otlp_endpoint": endpoint, "otlp_metrics_interval": 1.0}
    return Settings.model_validate({
        "storage": {"database_url": f"sqlite+aiosqlite:///{folder}/gh.db"},
        "identity": {"require_key": False, "secret": "b" * 40},
        "edge": {"detector": {"enabled": False}},  # one client sending thousands a second
        "telemetry": telemetry})


async def round_cpu(endpoint: str | None, n: int, stream: bool) -> float:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(settings(folder, endpoint))
        await app.startup()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            for _ in range(50):  # warm up
                await c.post("/v1/chat/completions", json={**BODY, "stream": stream})
            start = time.process_time()
            for _ in range(n):
                r = await c.post("/v1/chat/completions", json={**BODY, "stream": stream})
                assert r.status_code == 200
            await asyncio.sleep(1.2)  # the exporter's batch for these requests goes out
            used = time.process_time() - start
        await app.aclose()
    return used / n * 1e6


async def measure(requests: int, rounds: int, endpoint: str) -> None:
    for stream in (False, True):
        off: list[float] = []
        on: list[float] = []
        for _ in range(rounds):
            off.append(await round_cpu(None, requests, stream))
            on.append(await round_cpu(endpoint, requests, stream))
        a, b = statistics.median(off), statistics.median(on)
        print(f"{'stream' if stream else 'whole '}  off {a:7.1f} µs CPU/request   "
              f"on {b:7.1f} µs   +{b - a:6.1f} µs ({(b - a) / a:+.1%})  "
              f"[{requests} requests × {rounds} rounds, medians]")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    port = 14318
    sink = subprocess.Popen([sys.executable, "-c", SINK.format(port=port)])
    try:
        time.sleep(2)
        asyncio.run(measure(args.requests, args.rounds, f"http://127.0.0.1:{port}"))
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
