"""The lightest client and upstream this machine has, for benchmarks where the gateway must
have the cores to itself: ``wrk`` (C, one thread) as the client and nginx answering the test
upstream's own replies as fixed bodies as the upstream.

On two cores the usual pair (bench/loadgen.py, ~30 µs of CPU a request, and the test upstream,
uvicorn at ~65 µs) takes about a quarter of what one gateway worker needs, so a second worker
cannot be shown doubling anything; wrk and nginx cost a few µs each (measured beside the
gateway in every cell, so the figures say what they took). bench/workers.py ``--light``.

wrk comes from Debian (``apt-get install wrk``), nginx as for the tests (.ci/services).
Traffic to 127.0.0.1 only; every run is bounded in time.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from overhead import HOST, MODEL, WORK, Children, Target, free_port, wait_healthy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support.nginx

WRK = shutil.which("wrk") or "/usr/bin/wrk"
T = TypeVar("T")


@dataclass
class WrkResult:
    rps: float
    total: int
    errors: int  # non-2xx answers, socket errors and timeouts
    cpu_s: float  # the wrk process's CPU (user + system)


def need_tools() -> str | None:
    """What is missing to run this, said as the command that installs it; None when ready."""
    from tests.support.nginx import NGINX

    missing = [pkg for tool, pkg in ((WRK, "wrk"), (NGINX, "nginx-light"))
               if not Path(tool).exists() and not shutil.which(tool)]
    return f"apt-get install {' '.join(missing)}" if missing else None


def start_nginx_upstream(kids: Children, up: Target) -> Target:
    """nginx on a free port answering ``GET /v1/models`` and every POST with what the test
    upstream ``up`` answers to the benchmark's chat completion (its usage included), byte
    for byte, on keep-alive connections that last."""
    from tests.support.nginx import MAIN, NGINX

    base = f"http://{HOST}:{up.port}/v1"
    chat = httpx.post(f"{base}/chat/completions", timeout=10, json={
        "model": MODEL, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello to the benchmark, please."}]}).text
    models = httpx.get(f"{base}/models", timeout=10).text
    for body in (chat, models):
        if "'" in body or "$" in body or "\\" in body:
            raise RuntimeError(f"cannot put this reply in nginx's return: {body[:200]}")
    port = free_port()
    tmp = WORK / "nginx-upstream"
    tmp.mkdir(parents=True, exist_ok=True)
    site = f"""
    server {{
        listen {HOST}:{port};
        keepalive_requests 100000000;
        keepalive_timeout 300s;
        default_type application/json;
        location = /v1/models {{ return 200 '{models}'; }}
        location / {{ return 200 '{chat}'; }}
    }}"""
    (tmp / "nginx.conf").write_text(MAIN.format(tmp=tmp, http=site))
    proc = kids.start("nginx-upstream", [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")])
    wait_healthy(proc, port, "/v1/models", 15, "nginx upstream")
    return Target("direct", "nginx (fixed replies)", port, "x", proc.pid)


def _lua(req: bytes) -> str:
    """wrk's script for the pre-encoded request ``req`` (bench/loadgen.py's): its method,
    path, headers and body; wrk writes Host and Content-Length itself."""
    head, _, body = req.partition(b"\r\n\r\n")
    first, *lines = head.decode().split("\r\n")
    method = first.split(" ", 1)[0]
    out = [f'wrk.method = "{method}"', f"wrk.body = [==[{body.decode()}]==]"]
    for line in lines:
        name, _, value = line.partition(": ")
        if name.lower() not in ("host", "content-length"):
            out.append(f'wrk.headers["{name}"] = [==[{value}]==]')
    return "\n".join(out) + "\n"


def path_of(req: bytes) -> str:
    return req.split(b" ", 2)[1].decode()


def run_wrk(port: int, req: bytes, *, conns: int, duration: float,
            during: float | None = None,
            then: Callable[[], T] | None = None) -> tuple[WrkResult, T | None]:
    """wrk for ``duration`` s, one thread, ``conns`` keep-alive connections sending ``req``
    to 127.0.0.1:``port``. ``then`` is called ``during`` s into the run (half way by default)
    and what it returns is returned beside wrk's figures. A wrk that outlives its run by 30 s
    is killed."""
    script = WORK / f"wrk-{port}.lua"
    script.write_text(_lua(req))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([WRK, "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "10s",
                             "-s", str(script), f"http://{HOST}:{port}{path_of(req)}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    try:
        if then is not None:
            time.sleep(during or duration / 2)
            seen = then()
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    return WrkResult(*_parse(out), cpu_s=(after.ru_utime - before.ru_utime
                                          + after.ru_stime - before.ru_stime)), seen


def _parse(out: str) -> tuple[float, int, int]:
    rps = total = errors = 0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif " requests in " in line:
            total = int(words[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            errors += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit())
    if not total:
        raise RuntimeError(f"wrk's output had no request count: {out}")
    return rps, total, errors
