#!/usr/bin/env python
"""Admission under overload: what the priority queue and fast shedding buy at 1×-10× capacity.

A model with a known capacity: SLOTS requests at once, SERVICE_MS each (capacity_rps =
SLOTS / SERVICE_S; 20 × 200 ms = 100 req/s by default). Offered load: 1×, 2×, 5× and 10× that,
open loop (request i is sent at i / rate whatever happened before, and timed from then),
mixed 10 % priority tier (high), 30 % standard (normal), 60 % flex (low, the free-equivalent
API tier), one key per tier made with ``gatehouse keys create``. Two gateways, one worker
each, identical but for ``[admission] enabled``: ``on`` (``[models.m] max_concurrency =
SLOTS``, default classes) and ``off`` (no admission: every request goes to the backend).

The backend is a small capped model server started by this script (``--serve-model``): SLOTS
requests run at once, each for SERVICE_MS, the rest wait FIFO, like an inference server with
a fixed number of batch slots. Not the built-in demo model: the demo answers every request
after an ``asyncio.sleep``, in parallel without limit, so with admission off it would serve
10× capacity at unchanged latency — a model with no capacity limit, which is not what
admission is for. With admission on the backend never sees more than SLOTS requests at once,
so the ``on`` figures are what the demo model with ``max_concurrency = SLOTS`` gives.

Per tier: success rate, latency p50/p99 of successes, queue wait p50/p99 measured at the
client as latency minus the unloaded service time (median of sequential requests at start),
the server's mean admission wait (``gatehouse_admission_wait_seconds`` sum/count from
/metrics, before/after), shed latency p50/p99 (503 answers), and the goodput (successful
req/s) as a share of capacity. Medians over repeats; on/off cells interleaved.

    .venv/bin/python bench/overload.py            # ~5 minutes
    .venv/bin/python bench/overload.py --quick    # ~1.5 minutes

Two cores are shared by the load client, both gateways and both model servers: the default
capacity (100 req/s) keeps the 10× cell at 1,000 req/s, which the callback-driven client
(bench/loadgen.py machinery) sends on time (the send lag is printed). All traffic goes to
127.0.0.1; every cell is bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead
from overhead import HOST, WORK, Children, log

TIERS = ("priority", "standard", "flex")
CLASS = {"priority": "high", "standard": "normal", "flex": "low"}
MIX = {"priority": 0.1, "standard": 0.3, "flex": 0.6}
MODEL = "m"


# -- the capped model server (a child process) ------------------------------------------------

REPLY = (b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"m",'
         b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
         b'"finish_reason":"stop"}],'
         b'"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}')
MODELS = b'{"object":"list","data":[{"id":"m","object":"model","owned_by":"bench"}]}'


def serve_model(port: int, slots: int, service_ms: float) -> None:
    """``slots`` requests at once, ``service_ms`` each; the rest wait FIFO. A request whose
    client (the gateway) has gone while it waited is dropped without taking a slot."""
    sem = asyncio.Semaphore(slots)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if m:
                    await reader.readexactly(int(m.group(1)))
                if head.startswith(b"GET"):
                    body = MODELS
                else:
                    async with sem:
                        if reader.at_eof() or writer.is_closing():
                            break
                        await asyncio.sleep(service_ms / 1000)
                    body = REPLY
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, port, backlog=4096)
        async with server:
            await server.serve_forever()

    import uvloop

    uvloop.run(main())


# -- gateways ---------------------------------------------------------------------------------

@dataclass
class Gw:
    mode: str  # on | off
    port: int
    pid: int
    model_pid: int
    keys: dict[str, str]


cli = overhead.gatehouse_cli


def start(kids: Children, py: str, mode: str, slots: int, service_ms: float) -> Gw:
    mport = overhead.free_port()
    mproc = kids.start(f"model-{mode}", [py, __file__, "--serve-model", str(mport),
                                         str(slots), str(service_ms)])
    overhead.wait_healthy(mproc, mport, "/v1/models", 30, f"model-{mode}")
    port = overhead.free_port()
    home = WORK / f"overload-{mode}"
    home.mkdir(parents=True, exist_ok=True)
    for old in home.glob("gatehouse.db*"):
        old.unlink()
    cfg = home / "gatehouse.toml"
    cfg.write_text(f"""\
[server]
host = "{HOST}"
port = {port}

[storage]
database_url = "sqlite+aiosqlite:///{home}/gatehouse.db"

[telemetry]
access_log = false

[identity]
require_key = true
secret_file = "{home}/secret"

[admission]
enabled = {"true" if mode == "on" else "false"}

[upstreams.model]
base_url = "http://{HOST}:{mport}/v1"
first_byte_timeout = 10

[models.{MODEL}]
backends = [{{ upstream = "model", model = "{MODEL}" }}]
max_concurrency = {slots}
""")
    cli(py, cfg, "migrate")
    keys = {}
    for tier in TIERS:  # one org per tier: round robin inside a class is between orgs
        cli(py, cfg, "orgs", "create", f"org-{tier}")
        cli(py, cfg, "projects", "create", f"org-{tier}/load")
        keys[tier] = cli(py, cfg, "keys", "create", f"org-{tier}/load", "--tier", tier)
    proc = kids.start(f"gatehouse-{mode}", [py, "-c", overhead.LAUNCH, "serve", "--config", str(cfg),
                                            "--host", HOST, "--port", str(port),
                                            "--workers", "1"],
                      env=dict(os.environ, PYTHONPATH=str(overhead.ROOT)))
    overhead.wait_healthy(proc, port, "/healthz", 60, f"gatehouse-{mode}")
    return Gw(mode, port, proc.pid, mproc.pid, keys)


def metrics(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def wait_stats(text: str) -> dict[str, tuple[float, float]]:
    """priority class → (sum, count) of gatehouse_admission_wait_seconds."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for part, i in (("_sum", 0), ("_count", 1)):
            if line.startswith(f"gatehouse_admission_wait_seconds{part}{{"):
                cls = re.search(r'priority="(\w+)"', line)
                if cls:
                    out.setdefault(cls.group(1), [0.0, 0.0])[i] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def shed_reasons(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gatehouse_admission_total{"):
            reason = re.search(r'result="(\w+)"', line)
            if reason:
                out[reason.group(1)] = out.get(reason.group(1), 0) + float(line.rsplit(" ", 1)[1])
    return out


# -- the mixed open-loop client (bench/loadgen.py's machinery, one request per tier) ----------

class _MixConn(loadgen._Conn):
    def send(self, idx: int, start: float) -> None:
        self.busy = True
        self.idx = idx
        self.status = 0
        self.first = 0.0
        self.start = start
        self.sent = loadgen.now()
        assert self.transport is not None
        self.transport.write(self.gen.requests[idx])  # type: ignore[attr-defined]


class _MixOpenLoop(loadgen._OpenLoop):
    conn_type = _MixConn

    def __init__(self, requests: list[bytes], **kw: Any) -> None:
        super().__init__(request=b"", n=len(requests), **kw)
        self.requests = requests
        self.status = [0] * len(requests)

    def done(self, conn: loadgen._Conn, idx: int, ok: bool, end: float, first: float,
             why: str) -> None:
        if 0 <= idx < len(self.status) and not self.state[idx]:
            self.status[idx] = conn.status if why.startswith("HTTP") else -1
        super().done(conn, idx, ok, end, first, why)


@dataclass
class Cell:
    mode: str
    mult: float
    repeat: int
    rate: float
    tiers: list[str]
    status: list[int]  # per measured request: HTTP status, -1 error, 0 unanswered
    latency: list[float]  # seconds from scheduled send to last byte (or cut, if unanswered)
    send_lag_p99: float
    good: dict[str, int]  # successes completed inside the measured window, per tier
    wait_server: dict[str, tuple[float, float]] = field(default_factory=dict)
    reasons: dict[str, float] = field(default_factory=dict)


async def offer(gw: Gw, rate: float, duration: float, warmup: float, grace: float,
                seed: int) -> tuple[list[str], list[int], list[float], float, dict[str, int]]:
    rng = random.Random(seed)
    n = int(rate * (warmup + duration))
    warm_n = int(rate * warmup)
    pattern = [t for t in TIERS for _ in range(round(MIX[t] * 20))]
    tiers: list[str] = []
    while len(tiers) < n:  # exact shares in every block of 20, order shuffled
        block = pattern[:]
        rng.shuffle(block)
        tiers += block
    tiers = tiers[:n]
    req = {t: loadgen.chat_request(HOST, gw.port, api_key=gw.keys[t], stream=False,
                                   model=MODEL) for t in TIERS}
    gen = _MixOpenLoop([req[t] for t in tiers], host=HOST, port=gw.port, warm_n=warm_n,
                       max_conns=4096)
    conns = await asyncio.gather(*(gen.connect() for _ in range(64)))
    gen.idle.extend(conns)
    t0 = loadgen.now() + 0.01
    for i in range(n):
        gen.sched[i] = t0 + i / rate
    i = 0
    try:
        while i < n:
            horizon = loadgen.now() + 0.0005
            while i < n and gen.sched[i] <= horizon:
                gen.dispatch(i)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, gen.sched[i] - 0.0005 - loadgen.now()))
        gen.stopping = True
        if gen.outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gen.finished.wait(),
                                       max(0.0, gen.sched[-1] + grace - loadgen.now()))
        cut = loadgen.now()
    finally:
        gen.close_all()
    # goodput: successes that *completed* inside the measured window, whenever sent
    w0 = t0 + warmup
    good = {t: 0 for t in TIERS}
    for k in range(n):
        if gen.state[k] == 1 and w0 <= gen.end[k] < w0 + duration:
            good[tiers[k]] += 1
    status, latency, lag = [], [], []
    for k in range(warm_n, n):
        if gen.state[k]:
            status.append(gen.status[k])
            latency.append(gen.end[k] - gen.start[k])
            lag.append(gen.sent[k] - gen.sched[k])
        else:
            status.append(0)
            latency.append(cut - gen.sched[k])
    return tiers[warm_n:], status, latency, pct(lag, 99) if lag else 0.0, good


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def baseline(runner: asyncio.Runner, gw: Gw) -> float:
    """Unloaded service time: median of 20 sequential requests through the gateway."""
    times = []
    for _ in range(20):
        t = time.perf_counter()
        status, _ = overhead.http_post(gw.port, "/v1/chat/completions",
                                       {"model": MODEL, "messages": [{"role": "user",
                                                                      "content": "hi"}]},
                                       gw.keys["priority"])
        assert status == 200, status
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# -- summary ----------------------------------------------------------------------------------

@dataclass
class Row:
    mode: str
    mult: float
    tier: str  # or "all"
    success: float
    lat50: float
    lat99: float
    wait50: float
    wait99: float
    wait_server_mean: float | None
    shed50: float
    shed99: float
    shed_n: float
    goodput: float  # share of capacity (tier "all") or req/s


def summarize(cells: list[Cell], base: dict[str, float], capacity: float,
              duration: float) -> list[Row]:
    rows = []
    for mode in ("on", "off"):
        for mult in sorted({c.mult for c in cells}):
            group = [c for c in cells if c.mode == mode and c.mult == mult]
            if not group:
                continue
            for tier in (*TIERS, "all"):
                per: list[list[float]] = []
                for c in group:
                    idx = [k for k, t in enumerate(c.tiers) if tier in (t, "all")]
                    ok = [c.latency[k] for k in idx if c.status[k] == 200]
                    shed = [c.latency[k] for k in idx if c.status[k] == 503]
                    waits = [max(0.0, x - base[mode]) for x in ok]
                    ws = None
                    if tier != "all" and CLASS[tier] in c.wait_server:
                        s, n = c.wait_server[CLASS[tier]]
                        ws = s / n if n else None
                    per.append([len(ok) / max(1, len(idx)), pct(ok, 50), pct(ok, 99),
                                pct(waits, 50), pct(waits, 99),
                                -1.0 if ws is None else ws, pct(shed, 50), pct(shed, 99),
                                len(shed), (sum(c.good.values()) if tier == "all"
                                            else c.good[tier]) / duration])

                def med(j: int, per: list[list[float]] = per) -> float:
                    vals = [p[j] for p in per if not math.isnan(p[j])]
                    return statistics.median(vals) if vals else float("nan")

                ws_med = med(5)
                rows.append(Row(mode, mult, tier, med(0), med(1), med(2), med(3), med(4),
                                None if ws_med < 0 else ws_med, med(6), med(7), med(8),
                                med(9) / capacity if tier == "all" else med(9)))
    return rows


def ms(v: float) -> str:
    if math.isnan(v):
        return "–"
    return f"{v * 1e3:,.1f}" if v < 0.1 else f"{v * 1e3:,.0f}"


def render(rows: list[Row], meta: dict[str, Any]) -> None:
    print(f"\nCapacity {meta['capacity']:.0f} req/s ({meta['slots']} slots × "
          f"{meta['service_ms']:.0f} ms); unloaded service time through the gateway: "
          f"on {meta['base_on'] * 1e3:.1f} ms, off {meta['base_off'] * 1e3:.1f} ms; "
          f"{meta['repeats']} repeat(s) × {meta['duration']:.0f} s per cell, medians.")
    print("queue wait = client latency − unloaded service time (p50/p99); "
          "server wait = mean of gatehouse_admission_wait_seconds over the cell.\n")
    head = ("| admission | load | tier | success | latency p50 / p99 ms | queue wait p50 / p99 ms "
            "| server wait mean ms | shed p50 / p99 ms | goodput |")
    print(head)
    print("|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|")
    for r in rows:
        good = f"{r.goodput * 100:.0f} % of capacity" if r.tier == "all" \
            else f"{r.goodput:.0f} req/s"
        sw = "–" if r.wait_server_mean is None else ms(r.wait_server_mean)
        shed = "–" if not r.shed_n else f"{ms(r.shed50)} / {ms(r.shed99)}"
        print(f"| {r.mode} | {r.mult:g}× | {r.tier} | {r.success * 100:.1f} % | "
              f"{ms(r.lat50)} / {ms(r.lat99)} | {ms(r.wait50)} / {ms(r.wait99)} | {sw} | "
              f"{shed} | {good} |")


def verdict(rows: list[Row], cells: list[Cell]) -> None:
    at = {(r.mode, r.tier): r for r in rows if r.mult == max(r.mult for r in rows)}
    top = max(r.mult for r in rows)
    print(f"\nTargets at {top:g}× capacity, admission on (mix "
          + " / ".join(f"{MIX[t] * 100:.0f} % {t}" for t in TIERS)
          + f"; the priority tier alone offers {top * MIX['priority']:g}× capacity):")

    def check(what: str, value: str, ok: bool) -> None:
        print(f"  {what:<48} {value:>22}  {'PASS' if ok else 'MISS'}")

    p = at[("on", "priority")]
    check("priority success ≥ 99.9 %", f"{p.success * 100:.2f} %", p.success >= 0.999)
    check("priority p99 queue wait ≤ 100 ms", f"{p.wait99 * 1e3:.1f} ms", p.wait99 <= 0.1)
    a = at[("on", "all")]
    check("shed answers ≤ 5 ms (p50)", f"{a.shed50 * 1e3:.1f} ms", a.shed50 <= 0.005)
    check("shed answers ≤ 5 ms (p99)", f"{a.shed99 * 1e3:.1f} ms", a.shed99 <= 0.005)
    check("goodput ≥ 95 % of capacity", f"{a.goodput * 100:.1f} %", a.goodput >= 0.95)
    o = at.get(("off", "priority"))
    if o is not None:
        print(f"  (admission off at {top:g}×: priority success {o.success * 100:.1f} %, "
              f"p99 latency {ms(o.lat99)} ms; goodput "
              f"{at[('off', 'all')].goodput * 100:.0f} % of capacity)")
    reasons: dict[str, float] = {}
    for c in cells:
        if c.mode == "on" and c.mult == top:
            for k, v in c.reasons.items():
                reasons[k] = reasons.get(k, 0) + v
    if reasons:
        print("  sheds at " f"{top:g}× by reason (gatehouse_admission_total, all repeats): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(reasons.items())))
    odd: dict[int, int] = {}
    for c in cells:
        for s in c.status:
            if s not in (200, 503):
                odd[s] = odd.get(s, 0) + 1
    if odd:
        print("  other outcomes (all cells; 0 = unanswered by the cut, -1 = connection error): "
              + ", ".join(f"{k}: {v}" for k, v in sorted(odd.items())))


# -- main -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat of 4 s cells")
    ap.add_argument("--slots", type=int, default=20)
    ap.add_argument("--service-ms", type=float, default=200.0)
    ap.add_argument("--mults", type=float, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--mix", type=int, nargs=3, default=[10, 30, 60],
                    metavar=("PRIORITY", "STANDARD", "FLEX"),
                    help="per cent of requests per tier, multiples of 5 (default 10 30 60)")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--serve-model", nargs=3, metavar=("PORT", "SLOTS", "SERVICE_MS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_model:
        serve_model(int(args.serve_model[0]), int(args.serve_model[1]),
                    float(args.serve_model[2]))
        return 0
    if sum(args.mix) != 100 or any(p % 5 for p in args.mix):
        ap.error("--mix: three multiples of 5 that add up to 100")
    MIX.update(zip(TIERS, (p / 100 for p in args.mix)))
    repeats = args.repeats or (1 if args.quick else 3)
    duration = args.duration or (4.0 if args.quick else 6.0)
    capacity = args.slots / (args.service_ms / 1000)
    if max(args.mults) * capacity * (duration + 1) > 40_000:
        ap.error("rate × time too large (bounded at 40,000 requests per cell)")
    py = overhead.repo_python()
    kids = Children()
    started = time.monotonic()
    try:
        with overhead.terminate_on_signals():
            gws = [start(kids, py, mode, args.slots, args.service_ms) for mode in ("on", "off")]
            log("gateways up: " + ", ".join(f"{g.mode} :{g.port}" for g in gws))
            pids = [p for g in gws for p in (g.pid, g.model_pid)]
            import uvloop

            cells: list[Cell] = []
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                base = {g.mode: baseline(runner, g) for g in gws}
                for rep in range(repeats):
                    for mult in args.mults:
                        for g in (gws if rep % 2 == 0 else gws[::-1]):
                            overhead.quiesce(pids)
                            before = metrics(g.port)
                            rate = mult * capacity
                            tiers, status, latency, lag, good = runner.run(offer(
                                g, rate, duration, warmup=1.0, grace=3.0,
                                seed=rep * 100 + int(mult)))
                            time.sleep(0.2)
                            after = metrics(g.port)
                            w0, w1 = wait_stats(before), wait_stats(after)
                            r0, r1 = shed_reasons(before), shed_reasons(after)
                            cell = Cell(g.mode, mult, rep, rate, tiers, status, latency, lag, good,
                                        {k: (w1[k][0] - w0.get(k, (0, 0))[0],
                                             w1[k][1] - w0.get(k, (0, 0))[1]) for k in w1},
                                        {k: v - r0.get(k, 0) for k, v in r1.items()
                                         if k != "admitted" and v - r0.get(k, 0)})
                            cells.append(cell)
                            log(f"rep {rep + 1}/{repeats} {mult:>4g}× {g.mode:<3} "
                                f"{rate:6.0f} req/s: {sum(good.values()) / duration:6.1f} ok/s, "
                                f"{sum(s == 503 for s in status)} shed, "
                                f"{sum(s not in (200, 503) for s in status)} other; "
                                f"client send lag p99 {lag * 1e3:.1f} ms")
            meta = {"capacity": capacity, "slots": args.slots, "service_ms": args.service_ms,
                    "base_on": base["on"], "base_off": base["off"], "repeats": repeats,
                    "duration": duration}
            rows = summarize(cells, base, capacity, duration)
            render(rows, meta)
            verdict(rows, cells)
            lag = max(c.send_lag_p99 for c in cells)
            print(f"\nworst client send lag p99 over all cells: {lag * 1e3:.1f} ms "
                  "(the load generator kept its schedule if this is a few ms)")
            print(f"{time.strftime('%Y-%m-%d %H:%M')}; {overhead.machine()}; "
                  f"{time.monotonic() - started:.0f} s")
            return 0
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        return 130
    finally:
        kids.stop_all()


if __name__ == "__main__":
    sys.exit(main())
