#!/usr/bin/env python
"""The connection layer's cost and its worth, measured side by side in one run.

1. Overhead: gatehouse at this tree vs gatehouse at an earlier commit (``--baseline``,
   default the last commit before the connection layer), both on one worker in front of the
   same upstream, direct-to-upstream measured alongside: added p50/p99 at 500 req/s (open
   loop) and max req/s (closed loop), plain and streaming; median over repeats.
2. Attack: a well-behaved client's ``/healthz`` p50/p99 (200 req/s, open loop) alone, and
   while 1,000 slow connections dribble their heads and a header flood runs (2.3 MB heads,
   one after another) — on this tree and on the baseline.

    .venv/bin/python bench/front.py            # ~4 minutes
    .venv/bin/python bench/front.py --quick    # ~1.5 minutes, one repeat

All traffic goes to 127.0.0.1 (attackers bind 127.0.0.2-127.0.0.9, loopback on Linux);
every phase is bounded in time and the attackers stop by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead
from overhead import HOST, ROOT, WORK, Children, Target, log

BASELINE = "ef7c903"  # main before the connection layer (gatehouse/edge/protocol.py)
SLOW_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 6)]   # 250 slow connections each
FLOOD_ADDRESS = "127.0.0.9"


def checkout(ref: str) -> Path:
    """The source of ``ref`` in bench/.work/tree-SHA (git archive: no worktree bookkeeping)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = WORK / f"tree-{sha}"
    if not (dest / "gatehouse").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def healthz_request(port: int) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()


# -- the attackers (a separate process, so they do not share the measuring client's CPU) ---

def _slowloris(port: int, count: int, until: float) -> None:
    """``count`` connections that send a head a few bytes at a time, reopened when cut."""
    socks: list[socket.socket | None] = [None] * count

    def dial(i: int) -> None:
        s = socket.socket()
        s.setblocking(True)
        try:
            s.bind((SLOW_ADDRESSES[i % len(SLOW_ADDRESSES)], 0))
            s.connect((HOST, port))
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            s.setblocking(False)
            socks[i] = s
        except OSError:
            s.close()

    for i in range(count):
        dial(i)
    n = 0
    while time.monotonic() < until:
        time.sleep(0.5)
        n += 1
        for i, s in enumerate(socks):
            if s is None:
                dial(i)
                continue
            try:
                s.send(b"X-%d: y\r\n" % n)
            except OSError:
                s.close()
                socks[i] = None
    for s in socks:
        if s is not None:
            s.close()


def _flood(port: int, until: float) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 300_000 + b"\r\n"
    while time.monotonic() < until:
        s = socket.socket()
        try:
            s.bind((FLOOD_ADDRESS, 0))
            s.settimeout(30)
            s.connect((HOST, port))
            s.sendall(head)
            s.recv(4096)
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()


def _attack(port: int, seconds: float, slow: int) -> None:
    until = time.monotonic() + seconds
    flood = threading.Thread(target=_flood, args=(port, until), daemon=True)
    flood.start()
    _slowloris(port, slow, until)
    flood.join(35)


# -- the phases ------------------------------------------------------------------------------

def overhead_cells(runner: asyncio.Runner, direct: Target, gateways: list[Target],
                   args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        for stream in (False, True):
            kind = "stream" if stream else "plain"
            for t in overhead.rotate([direct, *gateways], rep):
                overhead.quiesce([x.pid for x in (direct, *gateways)])
                req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=stream)
                res = runner.run(loadgen.open_loop(HOST, t.port, req, rate=500,
                                                   duration=args.duration, warmup=1.0))
                out.setdefault((t.key, f"{kind} p50"), []).append(res.percentile(50) * 1e3)
                out.setdefault((t.key, f"{kind} p99"), []).append(res.percentile(99) * 1e3)
                res = runner.run(loadgen.closed_loop(HOST, t.port, req, conns=64,
                                                     duration=args.duration, warmup=1.0))
                out.setdefault((t.key, f"{kind} max"), []).append(res.throughput)
    return out


def attack_cells(runner: asyncio.Runner, gateways: list[Target],
                 args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    ctx = multiprocessing.get_context("spawn")
    for rep in range(args.repeats):
        for t in overhead.rotate(gateways, rep):
            req = healthz_request(t.port)
            for label in ("alone", "attacked"):
                overhead.quiesce([g.pid for g in gateways])
                attacker = None
                if label == "attacked":
                    attacker = ctx.Process(target=_attack, args=(t.port, args.duration + 4,
                                                                 args.slow), daemon=True)
                    attacker.start()
                    time.sleep(2.0)  # let the slow connections pile up first
                res = runner.run(loadgen.open_loop(HOST, t.port, req, rate=200,
                                                   duration=args.duration, warmup=0.5,
                                                   grace=10))
                if attacker is not None:
                    attacker.join(args.duration + 40)
                    if attacker.is_alive():
                        attacker.kill()
                lost = res.errors + res.timeouts
                out.setdefault((t.key, f"{label} p50"), []).append(res.percentile(50) * 1e3)
                out.setdefault((t.key, f"{label} p99"), []).append(res.percentile(99) * 1e3)
                out.setdefault((t.key, f"{label} failed"), []).append(float(lost))
                log(f"attack rep {rep + 1} {t.key:<9} {label:<8} p50 "
                    f"{res.percentile(50) * 1e3:8.2f} ms p99 {res.percentile(99) * 1e3:9.2f} ms "
                    f"failed {lost}")
    return out


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one repeat, shorter cells")
    p.add_argument("--baseline", default=BASELINE, help="git ref to compare against")
    p.add_argument("--repeats", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--slow", type=int, default=1000, help="slow connections in the attack")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 5.0)
    py = overhead.repo_python()
    kids = Children()
    try:
        base = checkout(args.baseline)
        direct = overhead.start_upstream(kids, py)
        now = overhead.start_gatehouse(kids, py, direct, name="front-now")
        now.key = "now"
        before = overhead.start_gatehouse(kids, py, direct, name="front-before", root=base)
        before.key = "baseline"
        gateways = [now, before]
        for t in gateways:
            overhead.smoke(t)
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            cost = overhead_cells(runner, direct, gateways, args)
            harm = attack_cells(runner, gateways, args)
    finally:
        kids.stop_all()

    print(f"\n## Connection layer: this tree vs {args.baseline} (median of {args.repeats})\n")
    print("| 500 req/s, one worker | direct | baseline | now | now ÷ baseline (added) |")
    print("|---|---|---|---|---|")
    for kind in ("plain", "stream"):
        for q in ("p50", "p99"):
            d = med(cost[("direct", f"{kind} {q}")])
            b = med(cost[("baseline", f"{kind} {q}")])
            n = med(cost[("now", f"{kind} {q}")])
            print(f"| {kind} {q} (ms) | {d:.2f} | {b:.2f} (+{b - d:.2f}) | {n:.2f} (+{n - d:.2f})"
                  f" | {(n - d) / (b - d) if b > d else float('nan'):.2f} |")
        b, n = med(cost[("baseline", f"{kind} max")]), med(cost[("now", f"{kind} max")])
        print(f"| {kind} max req/s | {med(cost[('direct', f'{kind} max')]):,.0f} | {b:,.0f} | "
              f"{n:,.0f} | {n / b:.2f} |")
    print(f"\n## /healthz of a well-behaved client (200 req/s) alone and under attack "
          f"({args.slow} slow connections + a 2.3 MB header flood)\n")
    print("| gateway | alone p50 / p99 (ms) | attacked p50 / p99 (ms) | p99 ratio | failed |")
    print("|---|---|---|---|---|")
    for key in ("baseline", "now"):
        a50, a99 = med(harm[(key, "alone p50")]), med(harm[(key, "alone p99")])
        x50, x99 = med(harm[(key, "attacked p50")]), med(harm[(key, "attacked p99")])
        print(f"| {key} | {a50:.2f} / {a99:.2f} | {x50:.2f} / {x99:.2f} | {x99 / a99:.1f}× | "
              f"{med(harm[(key, 'attacked failed')]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
