#!/usr/bin/env python
"""Where the p99 at a fixed rate goes: the gateway's own handling, its event loop, or the
machine around it.

`bench/overhead.py` reads latency at the client: from a request's scheduled time to its last
byte. On a 2-core machine the client, the upstream and the gateway share the cores, so its p99
holds the gateway's work and the operating system's scheduling of three processes together. This
runs open-loop cells (direct, then the full pipeline, alternating; plain and streamed) and puts
three readings of the same cells side by side:

- **client**: the latency loadgen saw (as overhead.py), direct and through the gateway;
- **gateway**: the latency the gateway itself recorded in its request log, from the moment the
  request's head was parsed to the record (the upstream's time included) — what the worker's
  own handling took;
- **loop lag**: a heartbeat on the worker's event loop every 1 ms (bench/_loop_lag.py, no
  thread): how late its beats ran, i.e. how long something held the loop.

A client p99 far above the gateway's own, with no loop lag to match, is time spent outside the
worker's handling (the kernel waking three processes on two cores), not a stall in it.

``--rule-changes N`` adds and removes a stored edge rule through the admin API N times during
each gateway cell (the worker then compiles its 10,000 rules again): what a rule change costs
the requests around it. ``--list-changes N`` adds a rule denying a list file of 100,000 ranges
and writes a new file N times during each gateway cell (the worker reads it within 2 s, parses
it and compiles the rules again). ``--keys N --admin-gets M`` puts N more API keys in the store
before the run and lists them all (``GET /admin/v1/keys``) M times during each gateway cell: what
an operator's listing costs the requests around it; ``--bans N --admin-path /edge/bans`` the
same with N bans (made through the admin API first, as an attack's detector would).

    .venv/bin/python bench/tail.py                     # 500 req/s, 3 repeats of 10 s: ~2.5 min
    .venv/bin/python bench/tail.py --rate 1000 --repeats 5 --duration 6
    .venv/bin/python bench/tail.py --rule-changes 4
    .venv/bin/python bench/tail.py --list-changes 2
    .venv/bin/python bench/tail.py --keys 10000 --admin-gets 3
    .venv/bin/python bench/tail.py --bans 10000 --admin-gets 3 --admin-path /edge/bans
    .venv/bin/python bench/tail.py --admin-gets 1 --first-admin --repeats 1   # its first use

Loopback only; bounded in requests and time; every child is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead as ov

LAUNCH = ("import sys; sys.path.insert(0, 'bench'); import _loop_lag; "
          "_loop_lag.serve(sys.argv[1:])")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def recorded(db: Path, since: float, until: float, stream: bool) -> list[float]:
    """The gateway's own latencies (ms) of the cell's requests, from its request log."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return [row[0] for row in c.execute(
            "SELECT latency_ms FROM request_log WHERE at >= ? AND at <= ? AND stream = ? "
            "AND status = 200", (since, until, int(stream)))]


def lag_report(pid: int, path: Path) -> list[tuple[float, float]]:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    for _ in range(100):
        time.sleep(0.05)
        if path.exists() and path.stat().st_size:
            time.sleep(0.1)
            return [tuple(x) for x in json.loads(path.read_text())["late"]]
    raise RuntimeError("the worker wrote no loop-lag report")


def admin(port: int, key: str, method: str, path: str, body: dict[str, object] | None = None
          ) -> dict[str, object]:
    req = urllib.request.Request(
        f"http://{ov.HOST}:{port}/admin/v1{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        answer: dict[str, object] = json.loads(r.read())
        return answer


def change_rules(port: int, key: str, count: int, start: float, every: float) -> threading.Thread:
    """From ``start`` (wall clock), a rule added or removed every ``every`` s, ``count`` times."""
    def run() -> None:
        made: list[str] = []
        for i in range(count):
            time.sleep(max(0.0, start + i * every - time.time()))
            if made:
                admin(port, key, "DELETE", f"/edge/rules/{made.pop()}")
            else:
                made.append(str(admin(port, key, "POST", "/edge/rules", {
                    "action": "deny", "cidr": f"192.0.2.{i % 250 + 1}/32",
                    "note": "bench/tail.py"})["id"]))
        for rule_id in made:
            admin(port, key, "DELETE", f"/edge/rules/{rule_id}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def admin_gets(port: int, key: str, path: str, count: int, start: float, every: float,
               took: list[float]) -> threading.Thread:
    """From ``start`` (wall clock), ``GET /admin/v1{path}`` every ``every`` s, ``count`` times;
    each answer's time (ms) goes to ``took``."""
    def run() -> None:
        for i in range(count):
            time.sleep(max(0.0, start + i * every - time.time()))
            t0 = time.perf_counter()
            admin(port, key, "GET", path)
            took.append((time.perf_counter() - t0) * 1e3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def add_keys(db: Path, count: int) -> None:
    """``count`` API keys put straight in the store (SQL, in one transaction), in the project
    of the bench's own key: what the listing has to read. Their hashes are random, so none
    can be used."""
    import secrets

    with sqlite3.connect(db) as c:
        org_id, project_id = c.execute(
            "SELECT org_id, project_id FROM api_keys WHERE project_id IS NOT NULL").fetchone()
        now = time.time()
        c.executemany(
            "INSERT INTO api_keys (id, hash, display, scope, name, org_id, project_id, tier, "
            "created_at, expires_at, revoked_at, last_used_at) "
            "VALUES (?, ?, ?, 'api', ?, ?, ?, NULL, ?, NULL, NULL, NULL)",
            [(f"key_{secrets.token_hex(8)}", secrets.token_hex(32), f"gh-bench-{i:06d}…",
              f"bench key {i}", org_id, project_id, now + i * 1e-6) for i in range(count)])


FEED_LINES = 100_000


def feed_text(seed: int) -> str:
    """A list file of FEED_LINES ranges (half addresses, half /24s in 10.0.0.0/8)."""
    import random

    rng = random.Random(seed)
    lines = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
             if i % 2 else f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
             for i in range(FEED_LINES)]
    return "# bench/tail.py feed\n" + "\n".join(lines) + "\n"


def write_feed(path: Path, text: str) -> None:
    """Written whole to a temporary file and moved over the last, as a feed should be."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def change_feed(path: Path, texts: list[str], start: float, every: float) -> threading.Thread:
    """Each of ``texts`` written in turn, from ``start`` every ``every`` s. They are made
    beforehand: making one is ~0.2 s of Python, which in this process would hold the GIL
    against the load generator's loop and show up as the gateway's latency."""
    def run() -> None:
        for i, text in enumerate(texts):
            time.sleep(max(0.0, start + i * every - time.time()))
            write_feed(path, text)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rule-changes", type=int, default=0,
                   help="stored edge rules added / removed during each gateway cell")
    p.add_argument("--list-changes", type=int, default=0,
                   help="new list files (100,000 ranges) written during each gateway cell")
    p.add_argument("--keys", type=int, default=0, help="API keys added to the store first")
    p.add_argument("--bans", type=int, default=0, help="bans made (admin API) first")
    p.add_argument("--admin-gets", type=int, default=0,
                   help="GET /admin/v1{--admin-path} (all of it) during each gateway cell")
    p.add_argument("--first-admin", action="store_true",
                   help="leave the admin app unbuilt: the first cell's first admin request "
                        "builds it (read with --repeats 1: plain has the build, stream not)")
    p.add_argument("--admin-path", default="/keys", choices=("/keys", "/users", "/orgs",
                                                             "/edge/bans", "/edge/rules"))
    args = p.parse_args()
    if args.rate * (args.duration + 0.5) > 100_000 or args.repeats > 20 \
            or args.rule_changes > 50 or args.list_changes > 10 or args.keys > 200_000 \
            or args.bans > 50_000 or args.admin_gets > 20:
        p.error("rate × duration or repeats too large (bounded at 100,000 requests a cell)")
    import uvloop

    kids = ov.Children()
    report = ov.WORK / "tail-loop-lag.json"
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        py = ov.repo_python()
        up = ov.start_upstream(kids, py)
        shutil.rmtree(ov.WORK / "tail", ignore_errors=True)  # a new store each run
        feed = ov.WORK / "tail" / "feed.txt"
        extra, feeds = "", []
        if args.list_changes:
            feed.parent.mkdir(parents=True, exist_ok=True)
            write_feed(feed, feed_text(0))
            feeds = [feed_text(seed) for seed in range(1, args.list_changes + 1)]
            extra = '\n[[edge.rules]]\naction = "deny"\nlist = "feed.txt"\n'
        gw = ov.start_full_gatehouse(kids, py, up, name="tail", launch=LAUNCH,
                                     env={"LOOP_LAG_REPORT": str(report)}, extra_toml=extra)
        db = ov.WORK / "tail" / "gatehouse.db"
        key, listed = "", []
        if args.keys:
            add_keys(db, args.keys)
        if args.rule_changes or args.admin_gets or args.bans:
            key = ov.gatehouse_cli(py, ov.WORK / "tail" / "gatehouse.toml", "keys", "create",
                                   "--admin").strip()
            if not args.first_admin:  # the admin app is built on first use
                admin(gw.port, key, "GET", "/edge/rules")
        for i in range(args.bans):  # one a request, as the detector makes them
            admin(gw.port, key, "POST", "/edge/bans", {
                "subject": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "seconds": 3600,
                "reason": "bench/tail.py"})
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for rep in range(args.repeats):
                for stream in (False, True):
                    mode = "stream" if stream else "plain"
                    order = [up, gw] if rep % 2 == 0 else [gw, up]
                    for t in order:
                        req = loadgen.chat_request(ov.HOST, t.port, api_key=t.api_key,
                                                   stream=stream)
                        began = time.time() + 0.5  # after the warm-up
                        changer = change_rules(
                            gw.port, key, args.rule_changes, began + 0.5,
                            (args.duration - 1) / max(1, args.rule_changes)
                        ) if t is gw and args.rule_changes else None
                        feeder = change_feed(  # a new mtime is a change to the gateway
                            feed, feeds, began + 0.5,
                            (args.duration - 3) / args.list_changes
                        ) if t is gw and args.list_changes else None
                        getter = admin_gets(
                            gw.port, key, args.admin_path, args.admin_gets, began + 0.75,
                            (args.duration - 1.5) / args.admin_gets, listed
                        ) if t is gw and args.admin_gets else None
                        res = runner.run(loadgen.open_loop(ov.HOST, t.port, req, rate=args.rate,
                                                           duration=args.duration, warmup=0.5))
                        ended = time.time()
                        for thread in (changer, feeder, getter):
                            if thread is not None:
                                thread.join(30)
                        cell = {"client_p50": pct(res.latencies, 0.5) * 1e3,
                                "client_p99": pct(res.latencies, 0.99) * 1e3,
                                "client_max": pct(res.latencies, 1.0) * 1e3,
                                "errors": res.errors}
                        if t is gw:
                            time.sleep(2.5)  # the request log is flushed once a second
                            own = recorded(db, began, ended, stream)
                            late = [ms for at, ms in lag_report(gw.pid, report)
                                    if began <= at <= ended]
                            cell |= {"gateway_p50": pct(own, 0.5), "gateway_p99": pct(own, 0.99),
                                     "recorded": len(own),
                                     "lag_over_2ms": sum(ms > 2 for ms in late),
                                     "lag_max": max(late, default=0.0)}
                        who = "gatehouse" if t is gw else "direct"
                        rows.setdefault((who, mode), []).append(cell)
                        ov.log(f"{who} {mode} rep {rep + 1}: " + ", ".join(
                            f"{k} {v:.2f}" for k, v in cell.items()))
    finally:
        kids.stop_all()

    def med(key: tuple[str, str], field: str) -> float:
        return statistics.median(c[field] for c in rows[key])

    print(f"\n## Where the p99 goes ({time.strftime('%Y-%m-%d %H:%M')}, {ov.machine()}; "
          f"{args.rate:g} req/s open loop, full pipeline, medians of {args.repeats} × "
          f"{args.duration:g} s"
          + (f"; {args.rule_changes} rule changes a gateway cell" if args.rule_changes else "")
          + (f"; {args.list_changes} list files of {FEED_LINES:,} ranges a gateway cell"
             if args.list_changes else "")
          + (f"; {args.admin_gets} listings (GET /admin/v1{args.admin_path}; {args.keys:,} "
             f"more keys, {args.bans:,} bans) a gateway cell" if args.admin_gets else "")
          + ")\n")
    print("| | client p50 / p99, direct | client p50 / p99 / max, gateway | added p50 / p99 | "
          "gateway's own p50 / p99 | loop late > 2 ms (beats) / longest |")
    print("|---|---|---|---|---|---|")
    for mode in ("plain", "stream"):
        d, g = ("direct", mode), ("gatehouse", mode)
        print(f"| {mode} | {med(d, 'client_p50'):.2f} / {med(d, 'client_p99'):.2f} ms "
              f"| {med(g, 'client_p50'):.2f} / {med(g, 'client_p99'):.2f} / "
              f"{med(g, 'client_max'):.1f} ms "
              f"| {med(g, 'client_p50') - med(d, 'client_p50'):.2f} / "
              f"{med(g, 'client_p99') - med(d, 'client_p99'):.2f} ms "
              f"| {med(g, 'gateway_p50'):.2f} / {med(g, 'gateway_p99'):.2f} ms "
              f"| {med(g, 'lag_over_2ms'):.0f} / {med(g, 'lag_max'):.1f} ms |")
    if listed:
        print(f"\n{args.admin_path} listing answered in {statistics.median(listed):.0f} ms (median of "
              f"{len(listed)}; {min(listed):.0f}–{max(listed):.0f})")
    errors = sum(c["errors"] for cells in rows.values() for c in cells)
    fewest = min(c["recorded"] for (who, _), cells in rows.items() if who == "gatehouse"
                 for c in cells)
    print(f"\nerrors: {errors}; requests the gateway recorded per cell: {fewest:.0f} at least "
          f"(sent: {args.rate * args.duration:.0f})")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
