#!/usr/bin/env python
"""Gateway overhead benchmark: gatehouse vs LiteLLM proxy vs direct-to-upstream.

Starts the test upstream (gatehouse.testing.upstream_server), the gatehouse gateway and
LiteLLM's proxy (installed on first use into bench/.venv-litellm), both with one worker and
both pointed at the same upstream, then measures from the client, interleaved in one run:

* added latency (p50, p99) over direct-to-upstream at fixed open-loop rates
  (100, 500, 1,000 req/s), non-streaming and streaming (time to last byte; time to first
  body byte reported for streams too);
* maximum sustained req/s on one worker (closed loop, 64 keep-alive connections);
* RSS of each server's process tree after load, and server CPU per request.

Each cell is repeated (targets rotated each repeat, direct measured alongside) and the
median over repeats is reported, with ratios gatehouse vs LiteLLM.

    .venv/bin/python bench/overhead.py              # full run, ~7-9 minutes
    .venv/bin/python bench/overhead.py --quick      # ~1-2 minutes, one repeat
    .venv/bin/python bench/overhead.py --no-litellm
    .venv/bin/python bench/overhead.py --full --quick   # + the full pipeline, ~3 min

``--full`` adds the configuration users run (start_full_gatehouse: a key required, limits on,
admission capacity set, 10,000 edge rules) beside open mode, and prints the targets for each.

All traffic goes to 127.0.0.1; every run is bounded in count and time; all child processes
are killed at the end, on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import http.client
import json
import math
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
LITELLM_VENV = BENCH / ".venv-litellm"
HOST = "127.0.0.1"
MODEL = "m"

TARGETS_P50_MS = 0.5
TARGETS_P99_MS = 2.0
TARGET_RATE = 500
TARGET_MAX_RPS = 2500
TARGET_RSS_MB = 100
TARGET_RATIO = 20
# the gateway's two configurations: open mode, and with --full the full pipeline beside it
GATEHOUSES = ("gatehouse", "gatehouse-full")
SHORT = {"direct": "direct", "gatehouse": "gh", "gatehouse-full": "gh full",
         "litellm": "LiteLLM"}
TITLES = {"gatehouse": "open mode (no key, no limits, no rules)",
          "gatehouse-full": "full pipeline (key required, limits on, admission capacity, "
                            "10,000 edge rules)"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def repo_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


# -- child processes ------------------------------------------------------------------------

def _pdeathsig() -> None:
    """In the child: get SIGTERM if the benchmark itself dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """Every process the benchmark starts, each in its own process group."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        atexit.register(self.stop_all)

    def start(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        WORK.mkdir(parents=True, exist_ok=True)
        out = open(WORK / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the child
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_pdeathsig)  # noqa: PLW1509 - no threads here
        out.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            # the child leads its own process group (start_new_session): end the group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # stragglers left in the group after the leader exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        while self.procs:
            _, proc = self.procs.pop()
            with contextlib.suppress(Exception):
                self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def http_post(port: int, path: str, body: dict[str, Any], api_key: str,
              timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body),
                     {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_healthy(proc: subprocess.Popen[bytes], port: int, path: str, timeout: float,
                 name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {WORK / name}.log")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, path) == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} not healthy on :{port}{path} after {timeout:.0f} s; "
                       f"see {WORK / name}.log")


# -- /proc ------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> tuple[float, float, int]:
    """(VmRSS sum, VmHWM sum, process count) over the tree, in MB (10^6 bytes)."""
    pids = tree(pid)
    rss = sum(_status_kb(p, "VmRSS") for p in pids) * 1024 / 1e6
    hwm = sum(_status_kb(p, "VmHWM") for p in pids) * 1024 / 1e6
    return rss, hwm, len(pids)


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        fields = _stat(p)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def quiesce(pids: list[int], limit: float = 20.0) -> None:
    """Wait until the servers are idle (< 5 % CPU over 0.25 s), so a backlog left by an
    overloaded cell does not bleed into the next one."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(0.25)
        if sum(cpu_seconds(p) for p in pids) - before < 0.0125:
            return


# -- targets ----------------------------------------------------------------------------------

@dataclass
class Target:
    key: str  # "direct" | "gatehouse" | "litellm"
    label: str
    port: int
    api_key: str
    pid: int  # root of the server's process tree
    rss_after: list[tuple[float, float, int]] = field(default_factory=list)


def start_upstream(kids: Children, py: str) -> Target:
    port = free_port()
    proc = kids.start("upstream", [py, "-m", "gatehouse.testing.upstream_server",
                                   "--host", HOST, "--port", str(port), "--name", "bench"])
    wait_healthy(proc, port, "/v1/models", 30, "upstream")
    return Target("direct", "direct upstream", port, "x", proc.pid)


def gateway_importable(py: str) -> str | None:
    r = subprocess.run([py, "-c", "import gatehouse.cli.main"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=False)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]


# ``python -c LAUNCH ARGS…`` runs the gatehouse CLI of the tree on PYTHONPATH
LAUNCH = ("import sys; from gatehouse.cli.main import main; "
          "sys.argv[0] = 'gatehouse'; sys.exit(main())")


def gatehouse_cli(py: str, cfg: Path, *args: str) -> str:
    """One gatehouse CLI command of this tree on config ``cfg``: its output, or RuntimeError
    with what it said."""
    r = subprocess.run([py, "-c", LAUNCH, *args, "--config", str(cfg)], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                       text=True, timeout=120, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"gatehouse {' '.join(args)} failed: {r.stderr}{r.stdout}")
    return r.stdout.strip()


def start_gatehouse(kids: Children, py: str, upstream: Target, *, name: str = "gatehouse",
                    require_key: bool = False, api_key: str = "x", extra_toml: str = "",
                    timeout: float = 60, org_tier: str | None = None,
                    root: Path = ROOT, env: dict[str, str] | None = None,
                    workers: int = 1, launch: str = LAUNCH) -> Target:
    """gatehouse on ``workers`` workers (one by default). By default in open mode (the identity stage runs and admits
    the call as anonymous); ``require_key=True`` makes a key (its org on ``org_tier`` if
    given) and sends it (see auth_overhead.py). ``extra_toml`` is appended to the config.
    Each instance gets its own store under bench/.work/NAME/. ``root`` is the source tree
    to run (another commit's, checked out by bench/front.py for a before/after run); ``env``
    adds to the environment the server (and the key commands) get; ``launch`` is the ``-c``
    code that runs the CLI (bench/memory.py's adds a tracemalloc probe)."""
    port = free_port()
    home = WORK / name
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "gatehouse.toml"
    cfg.write_text(f"""\
[server]
host = "{HOST}"
port = {port}

[telemetry]
access_log = false

[identity]
require_key = {"true" if require_key else "false"}

[upstreams.bench]
base_url = "http://{HOST}:{upstream.port}/v1"

[models.{MODEL}]
backends = [{{ upstream = "bench", model = "{MODEL}" }}]
""" + extra_toml)
    extra_path = (env or {}).get("PYTHONPATH")  # ahead of the tree (bench/redis_client.py)
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([*([extra_path] if extra_path else []), str(root)])
    if require_key:
        subprocess.run([py, "-c", LAUNCH, "migrate", "--config", str(cfg)], env=env, cwd=root,
                       check=True, capture_output=True)
        org = ["orgs", "create", "bench", *(["--tier", org_tier] if org_tier else [])]
        for args in (org, ["projects", "create", "bench/load"]):
            subprocess.run([py, "-c", LAUNCH, *args, "--config", str(cfg)], env=env, cwd=root,
                           capture_output=True, check=False)  # exists from an earlier run
        api_key = subprocess.run([py, "-c", LAUNCH, "keys", "create", "bench/load", "--config",
                                  str(cfg)], env=env, cwd=root, check=True, capture_output=True,
                                 text=True).stdout.strip()
    cmd = [py, "-c", launch,
           "serve", "--config", str(cfg), "--host", HOST, "--port", str(port),
           "--workers", str(workers)]
    proc = kids.start(name, cmd, env=env, cwd=root)
    wait_healthy(proc, port, "/healthz", timeout, name)
    return Target(name, name, port, api_key, proc.pid)


# The full pipeline — what users run: a key required, limits checked (far above the load),
# admission capacity set on the model, 10,000 edge rules (bench/edge.py's) with the detector
# counting. bench/telemetry.py, bench/profile_gateway.py --full and --full here share it.
FULL_LIMITS = """
[tiers.standard.limits]
requests_per_minute = 100000000
tokens_per_minute = 1000000000
"""
# admission capacity on the model, set through the environment ([models.m] is written above)
FULL_ENV = {"GATEHOUSE_MODELS__M__MAX_CONCURRENCY": "512"}


def start_full_gatehouse(kids: Children, py: str, upstream: Target, *, name: str,
                         env: dict[str, str] | None = None, timeout: float = 180,
                         workers: int = 1, launch: str = LAUNCH, root: Path = ROOT,
                         extra_toml: str = "") -> Target:
    """gatehouse on one worker with the full pipeline; ``env`` adds settings (e.g. telemetry
    off) through the environment, ``extra_toml`` to the configuration."""
    import edge  # bench/edge.py imports this module

    toml = edge.DETECTOR + edge.rules_toml() + FULL_LIMITS + extra_toml
    return start_gatehouse(kids, py, upstream, name=name, require_key=True, extra_toml=toml,
                           timeout=timeout, env={**FULL_ENV, **(env or {})}, workers=workers,
                           launch=launch, root=root)


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        return None
    r = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True, timeout=120, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_litellm(spec: str) -> str:
    version = litellm_version()
    if version:
        return version
    log(f"installing {spec!r} into {LITELLM_VENV.relative_to(ROOT)} (one-off, ~1-3 min)")
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "litellm-install.log", "wb") as out:
        subprocess.run(pip + [spec], check=True, stdout=out, stderr=subprocess.STDOUT,
                       timeout=1200)
    version = litellm_version()
    if not version:
        raise RuntimeError(f"litellm install failed; see {WORK / 'litellm-install.log'}")
    return version


def start_litellm(kids: Children, upstream: Target) -> Target:
    port = free_port()
    cfg = WORK / "litellm.yaml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": f"http://{HOST}:{upstream.port}/v1",
            "api_key": "x"}}],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }, indent=2))
    key = "sk-" + secrets.token_hex(16)
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=key,
               LITELLM_LOG="ERROR")
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", HOST,
           "--port", str(port), "--num_workers", "1"]
    proc = kids.start("litellm", cmd, env=env)
    wait_healthy(proc, port, "/health/liveliness", 180, "litellm")
    return Target("litellm", "LiteLLM", port, key, proc.pid)


def smoke(t: Target, *, stream: bool = True) -> None:
    """One plain and (unless ``stream`` is false: an upstream of fixed plain replies, as
    bench/light.py's) one streamed request must succeed before any timing."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    status, data = http_post(t.port, "/v1/chat/completions", body, t.api_key)
    if status != 200 or b"bench" not in data:
        raise RuntimeError(f"{t.label}: chat completion answered {status}: {data[:300]!r}")
    if not stream:
        return
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    status, data = http_post(t.port, "/v1/chat/completions", body, t.api_key)
    if status != 200 or b"[DONE]" not in data:
        raise RuntimeError(f"{t.label}: streamed completion answered {status}: {data[:300]!r}")


# -- two gateways side by side ----------------------------------------------------------------

@dataclass
class Paired:
    # (target key, rate) -> per repeat: (p50, p99) added over direct-to-upstream, ms
    added: dict[tuple[str, float], list[tuple[float, float]]]
    maxima: dict[str, list[float]]  # target key -> max closed-loop req/s, per repeat
    cpu_us: dict[str, list[float]]  # target key -> its process's CPU µs per request, closed loop
    loads: list[float]  # 1-minute load average at each repeat's end
    errors: dict[str, int]  # target key -> answers that were errors (an overloaded gateway
    first_errors: dict[str, str]  # sheds with 429/503 by design: reported, not fatal)


def paired_added(targets: list[Target], rates: list[float], repeats: int, duration: float,
                 content: str | None = None) -> Paired:
    """Gateways measured side by side against ``targets[0]`` (the upstream itself), plain
    requests (of ``content``, else a short prompt), interleaved and rotated each repeat: max
    closed-loop throughput, then the latency added over direct at each open-loop rate."""
    import uvloop

    pids = [t.pid for t in targets]
    direct = targets[0].key
    out = Paired({}, {}, {}, [], {}, {})

    def count_errors(key: str, res: loadgen.Result) -> None:
        out.errors[key] = out.errors.get(key, 0) + res.errors
        if res.first_error:
            out.first_errors.setdefault(key, res.first_error)

    def request(t: Target) -> bytes:
        extra = {"content": content} if content is not None else {}
        return loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False, **extra)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for t in targets:  # warm up: connections, the tokenizer, the caches
            runner.run(loadgen.closed_loop(HOST, t.port, request(t), conns=8, duration=1.0,
                                           warmup=0.0))
        for rep in range(repeats):
            order = rotate(targets, rep)
            for t in order:
                quiesce(pids)
                cpu = cpu_seconds(t.pid)
                res = runner.run(loadgen.closed_loop(HOST, t.port, request(t), conns=64,
                                                     duration=duration, warmup=0.5))
                cpu = cpu_seconds(t.pid) - cpu
                count_errors(t.key, res)
                out.maxima.setdefault(t.key, []).append(res.throughput)
                out.cpu_us.setdefault(t.key, []).append(cpu / max(1, res.total) * 1e6)
            for rate in rates:
                lat: dict[str, tuple[float, float]] = {}
                for t in order:
                    quiesce(pids)
                    res = runner.run(loadgen.open_loop(
                        HOST, t.port, request(t), rate=rate,
                        duration=max(duration, 2000 / rate), warmup=0.5, max_conns=256))
                    count_errors(t.key, res)
                    lat[t.key] = (res.percentile(50) * 1e3, res.percentile(99) * 1e3)
                for key in lat:
                    if key != direct:
                        out.added.setdefault((key, rate), []).append(
                            (lat[key][0] - lat[direct][0], lat[key][1] - lat[direct][1]))
            out.loads.append(os.getloadavg()[0])
            log(f"repeat {rep + 1}/{repeats} done (load average {out.loads[-1]:.1f})")
    return out


# -- the plan ---------------------------------------------------------------------------------

@dataclass
class Cell:
    target: str
    stream: bool
    rate: float | None  # None = max throughput (closed loop)
    repeat: int
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    throughput: float
    completed: int
    errors: int
    timeouts: int
    saturated: bool
    cpu_us_per_req: float | None = None
    cpu_util: float | None = None
    send_lag_p99_ms: float | None = None
    first_error: str | None = None


def rotate(items: list[Target], k: int) -> list[Target]:
    k %= len(items)
    return items[k:] + items[:k]


def run_plan(runner: asyncio.Runner, targets: list[Target], args: argparse.Namespace,
             on_cell: Callable[[Cell], None]) -> list[Cell]:
    cells: list[Cell] = []
    pids = [t.pid for t in targets]
    max_rps: dict[tuple[str, bool], float] = {}

    def record(cell: Cell) -> None:
        cells.append(cell)
        on_cell(cell)

    for rep in range(args.repeats):
        for stream in (False, True):
            order = rotate(targets, rep)
            # maximum sustained throughput, closed loop
            for t in order:
                quiesce(pids)
                req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=stream)
                cpu0, w0 = cpu_seconds(t.pid), time.perf_counter()
                res = runner.run(loadgen.closed_loop(HOST, t.port, req, conns=args.conns,
                                                     duration=args.duration,
                                                     warmup=args.warmup))
                cpu1, w1 = cpu_seconds(t.pid), time.perf_counter()
                t.rss_after.append(rss_mb(t.pid))
                sent = max(1, res.total)
                max_rps[(t.key, stream)] = min(max_rps.get((t.key, stream), 1e18),
                                               res.throughput)
                record(Cell(t.key, stream, None, rep, res.percentile(50) * 1e3,
                            res.percentile(99) * 1e3, res.percentile(50, which="ttft") * 1e3,
                            res.percentile(99, which="ttft") * 1e3, res.throughput,
                            res.completed, res.errors, res.timeouts, False,
                            cpu_us_per_req=(cpu1 - cpu0) / sent * 1e6,
                            cpu_util=(cpu1 - cpu0) / (w1 - w0), first_error=res.first_error))
            # fixed rates, open loop
            for rate in args.rates:
                for t in order:
                    cap = max_rps.get((t.key, stream), 1e18)
                    if cap < 0.5 * rate or (rep and cap < 0.9 * rate):
                        # far beyond what it sustains: reported as saturated, not timed;
                        # near its limit: one (saturated) repeat is enough
                        continue
                    quiesce(pids)
                    req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=stream)
                    res = runner.run(loadgen.open_loop(HOST, t.port, req, rate=rate,
                                                       duration=max(args.duration,
                                                                    args.min_samples / rate),
                                                       warmup=args.open_warmup,
                                                       max_conns=args.max_conns))
                    lag = sorted(res.send_lag)
                    record(Cell(t.key, stream, rate, rep, res.percentile(50) * 1e3,
                                res.percentile(99) * 1e3,
                                res.percentile(50, which="ttft") * 1e3,
                                res.percentile(99, which="ttft") * 1e3, res.throughput,
                                res.completed, res.errors, res.timeouts, res.saturated,
                                send_lag_p99_ms=(lag[int(0.99 * (len(lag) - 1))] * 1e3
                                                 if lag else None),
                                first_error=res.first_error))
            for t in targets:
                t.rss_after.append(rss_mb(t.pid))
    return cells


# -- report -----------------------------------------------------------------------------------

def _med(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


@dataclass
class Summary:
    added: dict[tuple[str, bool, float], dict[str, float]]
    direct: dict[tuple[bool, float], dict[str, float]]
    sat: dict[tuple[str, bool, float], bool]
    max_rps: dict[tuple[str, bool], float]
    cpu_us: dict[tuple[str, bool], float]
    cpu_util: dict[tuple[str, bool], float]
    rss: dict[str, tuple[float, float, int]]
    errors: dict[str, int]
    first_errors: dict[str, str]
    repeats: dict[tuple[str, bool, float], int]
    client_lag_p99: float


def summarize(cells: list[Cell], targets: list[Target], rates: list[float]) -> Summary:
    by = {(c.target, c.stream, c.rate, c.repeat): c for c in cells}
    added: dict[tuple[str, bool, float], dict[str, float]] = {}
    direct: dict[tuple[bool, float], dict[str, float]] = {}
    sat: dict[tuple[str, bool, float], bool] = {}
    reps: dict[tuple[str, bool, float], int] = {}
    for stream in (False, True):
        for rate in rates:
            d = [c for c in cells if c.target == "direct" and c.stream == stream
                 and c.rate == rate]
            direct[(stream, rate)] = {k: _med([getattr(c, k) for c in d]) for k in
                                      ("p50_ms", "p99_ms", "ttft_p50_ms", "ttft_p99_ms")}
            for t in targets:
                if t.key == "direct":
                    continue
                diffs: dict[str, list[float]] = {k: [] for k in
                                                 ("p50_ms", "p99_ms", "ttft_p50_ms")}
                mine = [c for c in cells if c.target == t.key and c.stream == stream
                        and c.rate == rate]
                for c in mine:
                    ref = by.get(("direct", stream, rate, c.repeat))
                    if ref is None:
                        continue
                    for k, values in diffs.items():
                        values.append(getattr(c, k) - getattr(ref, k))
                added[(t.key, stream, rate)] = {k: _med(v) for k, v in diffs.items()}
                cap = _med([c.throughput for c in cells if c.target == t.key
                            and c.stream == stream and c.rate is None])
                # saturated: not timed, fell behind in a repeat, or a max below the rate
                sat[(t.key, stream, rate)] = (not mine or any(c.saturated for c in mine)
                                              or cap < 0.9 * rate)
                reps[(t.key, stream, rate)] = len(mine)
    max_rps, cpu_us, cpu_util = {}, {}, {}
    for t in targets:
        for stream in (False, True):
            m = [c for c in cells if c.target == t.key and c.stream == stream and c.rate is None]
            max_rps[(t.key, stream)] = _med([c.throughput for c in m])
            cpu_us[(t.key, stream)] = _med([c.cpu_us_per_req or float("nan") for c in m])
            cpu_util[(t.key, stream)] = _med([c.cpu_util or float("nan") for c in m])
    rss = {t.key: (_med([r[0] for r in t.rss_after]), max(r[1] for r in t.rss_after),
                   t.rss_after[-1][2]) for t in targets if t.rss_after}
    errors = {t.key: sum(c.errors for c in cells if c.target == t.key) for t in targets}
    first_errors = {}
    for c in cells:
        if c.first_error and c.target not in first_errors:
            first_errors[c.target] = c.first_error
    lags = [c.send_lag_p99_ms for c in cells if c.send_lag_p99_ms is not None]
    return Summary(added, direct, sat, max_rps, cpu_us, cpu_util, rss, errors, first_errors,
                   reps, _med(lags))


def fmt_ms(v: float, saturated: bool = False) -> str:
    if math.isnan(v):
        return "sat." if saturated else "–"
    if saturated:
        return f"≥{v / 1000:.1f} s" if v >= 1000 else f"≥{v:.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


FLOOR_MS = 0.05  # below this an added latency is within noise; ratios use it as the floor


def fmt_ratio(num: float, den: float, *, floor: float = 0.0) -> str:
    if math.isnan(num) or math.isnan(den):
        return "–"
    if floor and den < floor:
        return f"≥{num / floor:.0f}×"
    if den <= 0:
        return "–"
    r = num / den
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


def lat_ratio(litellm: float, gatehouse: float, litellm_saturated: bool) -> str:
    """LiteLLM's added latency over gatehouse's; gatehouse's is floored at FLOOR_MS."""
    if litellm_saturated:
        return "sat."  # its figure is mostly queueing then: no meaningful ratio
    if math.isnan(litellm):
        return "–"
    return fmt_ratio(litellm, gatehouse, floor=FLOOR_MS)


def render(s: Summary, targets: list[Target], args: argparse.Namespace,
           meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console() if sys.stdout.isatty() else Console(width=150)
    keys = [t.key for t in targets]
    ghs = [k for k in GATEHOUSES if k in keys]  # open mode, then the full pipeline
    has_gh, has_ll = bool(ghs), "litellm" in keys
    head = ghs[-1] if ghs else "gatehouse"  # the ratios are the full pipeline's when run

    con.print()
    con.print(f"[bold]gatehouse overhead benchmark[/] — {meta['when']}, {meta['machine']}, "
              f"median of {args.repeats} repeat(s), {args.duration:g} s per cell (after "
              f"{args.open_warmup:g}/{args.warmup:g} s warm-up), upstream replies 8 tokens "
              f"instantly")
    con.print(f"LiteLLM {meta.get('litellm') or '(skipped)'}; all servers one worker; client: "
              f"open-loop fixed rate (latency from scheduled send to last byte), "
              f"one uvloop process")

    t1 = Table(title="Added latency over direct-to-upstream, ms (client-measured: p50/p99 "
                     "of the gateway minus p50/p99 of direct in the same repeat; gh = "
                     "gatehouse, LL/gh = LiteLLM's added latency ÷ gatehouse's)",
               title_justify="left")
    t1.add_column("mode")
    t1.add_column("req/s", justify="right")
    t1.add_column("direct p50", justify="right")
    t1.add_column("direct p99", justify="right")
    for key in ghs:
        t1.add_column(f"{SHORT[key]} +p50", justify="right", style="green")
        t1.add_column(f"{SHORT[key]} +p99", justify="right", style="green")
    if has_ll:
        t1.add_column("LiteLLM +p50", justify="right", style="yellow")
        t1.add_column("LiteLLM +p99", justify="right", style="yellow")
    if has_gh and has_ll:
        t1.add_column(f"LL/{SHORT[head]} p50", justify="right", style="bold")
        t1.add_column(f"LL/{SHORT[head]} p99", justify="right", style="bold")
    for stream in (False, True):
        for rate in args.rates:
            d = s.direct[(stream, rate)]
            row = ["stream" if stream else "plain", f"{rate:,.0f}", fmt_ms(d["p50_ms"]),
                   fmt_ms(d["p99_ms"])]
            for key in [*ghs, "litellm"]:
                if key in keys:
                    a, sat = s.added[(key, stream, rate)], s.sat[(key, stream, rate)]
                    row += [fmt_ms(a["p50_ms"], sat), fmt_ms(a["p99_ms"], sat)]
            if has_gh and has_ll:
                gh = s.added[(head, stream, rate)]
                ll = s.added[("litellm", stream, rate)]
                lsat = s.sat[("litellm", stream, rate)]
                row += [lat_ratio(ll["p50_ms"], gh["p50_ms"], lsat),
                        lat_ratio(ll["p99_ms"], gh["p99_ms"], lsat)]
            t1.add_row(*row)
    con.print(t1)
    con.print("  ≥: saturated (fell behind the offered rate: unanswered requests, a growing "
              "queue, or a max throughput below the rate); the figure is mostly queueing and "
              "a lower bound. sat.: not timed, the rate is over twice its max throughput.")
    con.print(f"  ratios floor gatehouse's added latency at {FLOOR_MS} ms (≥ when it is below, "
              "i.e. within noise); none where LiteLLM is saturated (its figure is a queue).")

    t2 = Table(title="Streaming: added time to first body byte (p50), ms", title_justify="left")
    t2.add_column("req/s", justify="right")
    t2.add_column("direct TTFB p50", justify="right")
    for key in [*ghs, "litellm"]:
        if key in keys:
            t2.add_column(f"{SHORT[key]} +TTFB p50", justify="right")
    if has_gh and has_ll:
        t2.add_column(f"LL/{SHORT[head]}", justify="right", style="bold")
    for rate in args.rates:
        row = [f"{rate:,.0f}", fmt_ms(s.direct[(True, rate)]["ttft_p50_ms"])]
        for key in [*ghs, "litellm"]:
            if key in keys:
                row.append(fmt_ms(s.added[(key, True, rate)]["ttft_p50_ms"],
                                  s.sat[(key, True, rate)]))
        if has_gh and has_ll:
            row.append(lat_ratio(s.added[("litellm", True, rate)]["ttft_p50_ms"],
                                 s.added[(head, True, rate)]["ttft_p50_ms"],
                                 s.sat[("litellm", True, rate)]))
        t2.add_row(*row)
    con.print(t2)

    t3 = Table(title=f"Max sustained throughput, one worker (closed loop, {args.conns} "
                     f"keep-alive connections), req/s; server CPU time per request and "
                     f"CPU use (1 core = 100 %) during the run", title_justify="left")
    t3.add_column("mode")
    short = SHORT
    for t in targets:
        t3.add_column(short[t.key], justify="right")
    if has_gh and has_ll:
        t3.add_column(f"{short[head]}/LL", justify="right", style="bold")
    if has_gh:
        t3.add_column(f"{short[head]}/direct", justify="right")
    for t in targets:
        if t.key != "direct":
            t3.add_column(f"{short[t.key]} µs/req", justify="right")
            t3.add_column(f"{short[t.key]} CPU", justify="right")
    for stream in (False, True):
        row = ["stream" if stream else "plain"]
        row += [f"{s.max_rps[(t.key, stream)]:,.0f}" for t in targets]
        if has_gh and has_ll:
            row.append(fmt_ratio(s.max_rps[(head, stream)],
                                 s.max_rps[("litellm", stream)]))
        if has_gh:
            row.append(f"{s.max_rps[(head, stream)] / s.max_rps[('direct', stream)]:.2f}")
        for t in targets:
            if t.key != "direct":
                row += [f"{s.cpu_us[(t.key, stream)]:,.0f}",
                        f"{s.cpu_util[(t.key, stream)]:.0%}"]
        t3.add_row(*row)
    con.print(t3)

    t4 = Table(title="Memory after load (sum over the server's process tree), MB",
               title_justify="left")
    t4.add_column("server")
    t4.add_column("RSS (median)", justify="right")
    t4.add_column("peak (VmHWM)", justify="right")
    t4.add_column("processes", justify="right")
    for t in targets:
        if t.key in s.rss:
            r = s.rss[t.key]
            t4.add_row(t.label, f"{r[0]:.0f}", f"{r[1]:.0f}", str(r[2]))
    if has_gh and has_ll:
        t4.add_row(f"ratio LiteLLM/{SHORT[head]}",
                   fmt_ratio(s.rss["litellm"][0], s.rss[head][0]),
                   fmt_ratio(s.rss["litellm"][1], s.rss[head][1]), "")
    con.print(t4)

    for gh in ghs:
        t5 = Table(title=f"gatehouse targets (one worker): {TITLES[gh]}",
                   title_justify="left")
        t5.add_column("target")
        t5.add_column("goal", justify="right")
        t5.add_column("measured", justify="right")
        t5.add_column("", justify="center")

        def check(name: str, goal: str, value: str, ok: bool | None, table: Any = t5) -> None:
            mark = "–" if ok is None else ("[green]PASS[/]" if ok else "[red]MISS[/]")
            table.add_row(name, goal, value, mark)

        at = s.added.get((gh, False, TARGET_RATE))
        if at:
            check(f"added p50 @ {TARGET_RATE} req/s", f"≤ {TARGETS_P50_MS} ms",
                  f"{at['p50_ms']:.2f} ms", at["p50_ms"] <= TARGETS_P50_MS)
            check(f"added p99 @ {TARGET_RATE} req/s", f"≤ {TARGETS_P99_MS:g} ms",
                  f"{at['p99_ms']:.2f} ms", at["p99_ms"] <= TARGETS_P99_MS)
            sa = s.added[(gh, True, TARGET_RATE)]
            check("  same, streaming (p50 / p99)", "(info)",
                  f"{sa['p50_ms']:.2f} / {sa['p99_ms']:.2f} ms", None)
        m = s.max_rps[(gh, False)]
        check("max sustained req/s", f"≥ {TARGET_MAX_RPS:,}", f"{m:,.0f}", m >= TARGET_MAX_RPS)
        check("  same, streaming", "(info)", f"{s.max_rps[(gh, True)]:,.0f}", None)
        rss = s.rss[gh][0]
        check("RSS per worker", f"≤ {TARGET_RSS_MB} MB", f"{rss:.0f} MB", rss <= TARGET_RSS_MB)
        if has_ll:
            ratio = m / s.max_rps[("litellm", False)]
            check("throughput vs LiteLLM", f"≥ {TARGET_RATIO}×", f"{ratio:.0f}×",
                  ratio >= TARGET_RATIO)
            # latency: compare where LiteLLM still keeps up (else its figure is a queue)
            fine = [rate for rate in args.rates if not s.sat[("litellm", False, rate)]]
            if fine:
                rate = max(fine)
                gh_ms = s.added[(gh, False, rate)]["p50_ms"]
                ll_ms = s.added[("litellm", False, rate)]["p50_ms"]
                lat_x = ll_ms / max(gh_ms, FLOOR_MS)
                check(f"added p50 vs LiteLLM @ {rate:,.0f} req/s", f"≤ 1/{TARGET_RATIO}",
                      f"1/{lat_x:.0f}" + (" (floor)" if gh_ms < FLOOR_MS else ""),
                      lat_x >= TARGET_RATIO)
        con.print(t5)

    notes = [(f"client send lag p99 (median over cells): {s.client_lag_p99:.2f} ms "
              "(already inside both the direct and the gateway figures)")]
    for key, n in s.errors.items():
        if n:
            notes.append(f"{key}: {n} error responses, first: {s.first_errors.get(key)}")
    for note in notes:
        con.print("  " + note)


# -- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="short run: one repeat, 0.5+2 s per cell (~1-2 min)")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    p.add_argument("--full", action="store_true",
                   help="also the full pipeline (start_full_gatehouse: key required, limits "
                        "on, admission capacity, 10,000 edge rules), beside open mode, with "
                        "the targets for both")
    p.add_argument("--no-gatehouse", action="store_true",
                   help="skip the gateway (e.g. to try the harness alone)")
    p.add_argument("--repeats", type=int, help="repeats per cell (default 3; --quick 1)")
    p.add_argument("--duration", type=float, help="measured seconds per cell (default 4)")
    p.add_argument("--warmup", type=float,
                   help="unmeasured seconds before each max-throughput cell (1)")
    p.add_argument("--open-warmup", type=float,
                   help="unmeasured seconds before each fixed-rate cell (0.5)")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                   default=[20.0, 100.0, 500.0, 1000.0],
                   help="fixed rates, comma-separated (20 req/s is where LiteLLM still keeps "
                        "up on a 2-core box, so latencies compare without its queueing)")
    p.add_argument("--min-samples", type=int, default=100,
                   help="open-loop cells last at least this many requests")
    p.add_argument("--conns", type=int, default=64, help="connections for max throughput")
    p.add_argument("--max-conns", type=int, default=256,
                   help="connection cap per open-loop cell")
    p.add_argument("--litellm-spec", default="litellm[proxy]",
                   help="pip requirement for LiteLLM (installed into bench/.venv-litellm)")
    p.add_argument("--json", type=Path, default=WORK / "overhead-last.json",
                   help="where to write raw per-cell results")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of a saved run (its --json file)")
    args = p.parse_args(argv)
    if args.report:
        return args
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    if args.open_warmup is None:
        args.open_warmup = 0.5
    if max(args.rates) * (args.open_warmup + args.duration) > 200_000:
        p.error("rate × time too large (bounded at 200,000 requests per cell)")
    return args


def save_results(results: dict[str, Any], path: Path, started: float) -> None:
    """Stamp a run's results (elapsed, when, machine) and write them as JSON to ``path``."""
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["when"] = time.strftime("%Y-%m-%d %H:%M")
    results["machine"] = machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that
    old = {s: signal.signal(s, raise_interrupt)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_bench(args: argparse.Namespace,
              start: Callable[[Children, str, Target], dict[Any, Target]],
              run: Callable[[argparse.Namespace, Target, dict[Any, Target]], dict[str, Any]],
              render: Callable[[dict[str, Any], argparse.Namespace], None]) -> int:
    """The frame of a side-by-side benchmark (bench/workers.py, edge.py, telemetry.py): the
    test upstream, the servers ``start`` makes beside it, ``run``'s results saved to
    ``args.json`` and rendered; every child stopped at the end, also on a signal."""
    py = repo_python()
    kids = Children()
    started = time.monotonic()
    try:
        with terminate_on_signals():
            up = start_upstream(kids, py)
            servers = start(kids, py, up)
            log("servers up: " + ", ".join(f"{k} :{t.port}" for k, t in servers.items()))
            results = run(args, up, servers)
            save_results(results, args.json, started)
            render(results, args)
            return 0
    except KeyboardInterrupt:
        return 130
    finally:
        kids.stop_all()


def report(path: Path) -> int:
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**saved["args"])
    labels = {"direct": "direct upstream", "gatehouse": "gatehouse",
              "gatehouse-full": "gatehouse (full pipeline)", "litellm": "LiteLLM"}
    targets = [Target(key, labels[key], 0, "", 0, [(r[0], r[1], r[2]) for r in rss])
               for key, rss in saved["rss"].items()]
    cells = [Cell(**c) for c in saved["cells"]]
    render(summarize(cells, targets, args.rates), targets, args, saved["meta"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(args.report)
    py = repo_python()
    kids = Children()
    meta: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                            "argv": sys.argv[1:]}
    started = time.monotonic()
    try:
        with terminate_on_signals():
            if not args.no_litellm:
                meta["litellm"] = ensure_litellm(args.litellm_spec)
            upstream = start_upstream(kids, py)
            targets = [upstream]
            log(f"upstream on :{upstream.port}")
            if not args.no_gatehouse:
                why = gateway_importable(py)
                if why:
                    raise SystemExit(f"gatehouse is not importable ({why}); "
                                     "run with --no-gatehouse to try the harness alone")
                targets.append(start_gatehouse(kids, py, upstream))
                log(f"gatehouse on :{targets[-1].port}")
                if args.full:
                    targets.append(start_full_gatehouse(kids, py, upstream,
                                                        name="gatehouse-full"))
                    log(f"gatehouse (full pipeline) on :{targets[-1].port}")
            if not args.no_litellm:
                log(f"starting LiteLLM {meta['litellm']} (takes ~10-30 s)")
                targets.append(start_litellm(kids, upstream))
                log(f"LiteLLM on :{targets[-1].port}")
            for t in targets:
                smoke(t)
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                # warm every server (imports, caches, connection pools) before timing
                for t in targets:
                    for stream in (False, True):
                        req = loadgen.chat_request(HOST, t.port, api_key=t.api_key,
                                                   stream=stream)
                        runner.run(loadgen.closed_loop(HOST, t.port, req, conns=8,
                                                       duration=1.0, warmup=0.0))
                n_cells = args.repeats * 2 * (1 + len(args.rates)) * len(targets)
                done = [0]

                def progress(c: Cell) -> None:
                    done[0] += 1
                    what = "max" if c.rate is None else f"{c.rate:,.0f}/s"
                    sat = " SATURATED" if c.saturated else ""
                    log(f"[{done[0]:>3}/~{n_cells}] rep {c.repeat + 1} "
                        f"{'stream' if c.stream else 'plain '} {what:>8} {c.target:<9} "
                        f"{c.throughput:8,.0f} req/s  p50 {c.p50_ms:8.2f} ms  "
                        f"p99 {c.p99_ms:8.2f} ms  err {c.errors} to {c.timeouts}{sat}")

                cells = run_plan(runner, targets, args, progress)
            summary = summarize(cells, targets, args.rates)
            meta["elapsed_s"] = round(time.monotonic() - started, 1)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "meta": meta, "args": {k: str(v) if isinstance(v, Path) else v
                                       for k, v in vars(args).items()},
                "cells": [vars(c) for c in cells],
                "rss": {t.key: t.rss_after for t in targets},
            }, indent=1))
            render(summary, targets, args, meta)
            log(f"done in {meta['elapsed_s']:.0f} s; raw results in {args.json}")
            return 0
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        return 130
    finally:
        kids.stop_all()


if __name__ == "__main__":
    sys.exit(main())
