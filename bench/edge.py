#!/usr/bin/env python
"""What the edge costs: added latency with 10,000 firewall rules vs none, and how many
403 1020 answers one worker gives per second (rule denials and bans), with no SQL and no
upstream touched.

Reuses overhead.py's machinery (children, the test upstream, one-worker gatehouse, loadgen).
Servers, each on one worker, all pointed at the same upstream:

* ``none``  — no rules (the edge still resolves the address, checks bans and counts);
* ``10k``   — 10,000 rules: 9,950 address rules (prefixes /8–/32, none covering 127.0.0.1)
  and 50 user-agent / path regex rules that do not match, so every request pays the whole
  regex scan on top of the index lookup (the worst case for a visitor matching nothing);
* ``deny``  — the 10,000 rules and a last one denying 127.0.0.1: every request answers 1020;
* ``ban``   — no rules, 127.0.0.1 banned (by hand) for the whole run.

The detector is on everywhere with limits far above the load, so its counting is measured
without it banning the benchmark. Measured, repeats interleaved, medians reported:

1. added latency (p50, p99) over direct-to-upstream at fixed open-loop rates, ``10k`` vs
   ``none``, and the ratio;
2. the closed-loop maximum of ``none`` and ``10k`` (chat completions);
3. 1020 answers per second on ``deny`` and ``ban`` (64 keep-alive connections, the same chat
   request), with ``gatehouse_store_queries_total`` and the upstream's request count read
   before and after: the upstream must not move; the SQL statements are the Ray events'
   batched inserts (off the request path, one per ≤ 2,000 answers), none per request. Beside
   them, ``GET /healthz`` on the same kind of worker: the cheapest answer it gives at all.

    .venv/bin/python bench/edge.py            # ~4 minutes
    .venv/bin/python bench/edge.py --quick    # ~1 minute

All traffic goes to 127.0.0.1; bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import overhead
from overhead import HOST, Children, Target, log

RULES = 10_000
REGEX_RULES = 50
DETECTOR = """
[edge.detector]
max_requests_per_address = 1000000000
max_requests_per_network = 1000000000
"""


def rules_toml(seed: int = 6, deny_me: bool = False) -> str:
    rng = random.Random(seed)
    lines: list[str] = []
    loopback = ipaddress.ip_network("127.0.0.0/8")
    made = 0
    while made < RULES - REGEX_RULES:
        length = rng.choice([8, 12, 16, 20, 22, 24, 24, 24, 28, 32, 32])
        net = ipaddress.ip_network((rng.getrandbits(32), length), strict=False)
        if net.overlaps(loopback):
            continue
        action = rng.choice(["deny", "deny", "deny", "allow", "challenge"])
        lines.append(f'[[edge.rules]]\naction = "{action}"\ncidr = "{net}"\n')
        made += 1
    for i in range(REGEX_RULES):
        field = "user_agent" if i % 2 else "path"
        pattern = f"(?i)scanner-{i}" if i % 2 else f"^/wp-{i}/"
        lines.append(f'[[edge.rules]]\naction = "deny"\n{field} = \'{pattern}\'\n')
    if deny_me:
        lines.append('[[edge.rules]]\naction = "deny"\ncidr = "127.0.0.1"\nname = "bench"\n')
    return "\n" + "\n".join(lines)


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of ``name``'s series on the server at ``port`` that carry these labels."""
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5).read().decode()
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{"))
               and all(w in line.partition("{")[2] for w in want))


def upstream_requests(up: Target) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{up.port}/_stats", timeout=5) as r:
        return int(json.loads(r.read())["requests"])


def ban_loopback(port: int, api_key: str) -> None:
    body = json.dumps({"subject": "127.0.0.1", "seconds": 3600, "reason": "bench"}).encode()
    req = urllib.request.Request(f"http://{HOST}:{port}/admin/v1/edge/bans", data=body,
                                 headers={"authorization": f"Bearer {api_key}",
                                          "content-type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def admin_key(py: str, name: str) -> str:
    import subprocess

    cfg = overhead.WORK / name / "gatehouse.toml"
    out = subprocess.run([py, "-c", overhead.LAUNCH, "keys", "create", "--admin", "--config",
                          str(cfg)],
                         capture_output=True, text=True, check=True, cwd=overhead.ROOT,
                         env={"PYTHONPATH": str(overhead.ROOT), "PATH": ""})
    return next(w for w in out.stdout.split() if w.startswith("gh-"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat, short cells")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rates", type=float, nargs="+", default=[500.0, 1000.0])
    p.add_argument("--json", type=Path, default=overhead.BENCH / "results" / "edge.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.duration, args.rates = 1, 3.0, [500.0]
    return args


def start(kids: Children, py: str, up: Target) -> dict[str, Target]:
    rules = rules_toml()
    servers = {
        "none": overhead.start_gatehouse(kids, py, up, name="edge-none", extra_toml=DETECTOR),
        "10k": overhead.start_gatehouse(kids, py, up, name="edge-10k",
                                        extra_toml=DETECTOR + rules, timeout=180),
        "deny": overhead.start_gatehouse(kids, py, up, name="edge-deny",
                                         extra_toml=DETECTOR + rules_toml(deny_me=True),
                                         timeout=180),
        "ban": overhead.start_gatehouse(kids, py, up, name="edge-ban", extra_toml=DETECTOR),
    }
    for key in ("none", "10k"):
        overhead.smoke(servers[key])
    ban_loopback(servers["ban"].port, admin_key(py, "edge-ban"))
    return servers


def main(argv: list[str] | None = None) -> int:
    return overhead.run_bench(parse_args(argv), start, run, render)


def run(args: argparse.Namespace, up: Target, servers: dict[str, Target]) -> dict[str, Any]:
    import uvloop

    out: dict[str, Any] = {"latency": {}, "max": {}, "denials": {}}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        targets = [up, servers["none"], servers["10k"]]
        for t in targets:  # warm up
            req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
            runner.run(loadgen.closed_loop(HOST, t.port, req, conns=8, duration=1, warmup=0))
        for rep in range(args.repeats):
            order = targets[rep % 3:] + targets[:rep % 3]
            for rate in args.rates:
                for t in order:
                    req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
                    res = runner.run(loadgen.open_loop(HOST, t.port, req, rate=rate,
                                                       duration=args.duration))
                    cell = out["latency"].setdefault(f"{rate:g}", {}).setdefault(t.key, [])
                    cell.append({"p50": res.percentile(50) * 1000,
                                 "p99": res.percentile(99) * 1000,
                                 "errors": res.errors + res.timeouts,
                                 "saturated": res.saturated})
                    log(f"rep {rep + 1} {rate:>6g}/s {t.key:<12} p50 {cell[-1]['p50']:.2f} ms "
                        f"p99 {cell[-1]['p99']:.2f} ms err {cell[-1]['errors']}")
            for key in ("none", "10k"):
                t = servers[key]
                req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
                res = runner.run(loadgen.closed_loop(HOST, t.port, req, conns=64,
                                                     duration=args.duration))
                out["max"].setdefault(key, []).append(res.throughput)
                log(f"rep {rep + 1} max {key:<5} {res.throughput:,.0f} req/s")
            t = servers["none"]  # the floor: the cheapest answer this worker gives at all
            probe = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{t.port}\r\n\r\n".encode()
            res = runner.run(loadgen.closed_loop(HOST, t.port, probe, conns=64,
                                                 duration=args.duration))
            out["floor"] = out.get("floor", []) + [res.throughput]
            log(f"rep {rep + 1} /healthz {res.throughput:,.0f}/s")
            for key in ("deny", "ban"):
                t = servers[key]
                sql0, up0 = metric(t.port, "gatehouse_store_queries_total"), upstream_requests(up)
                req = loadgen.chat_request(HOST, t.port, api_key=t.api_key, stream=False)
                res = runner.run(loadgen.closed_loop(HOST, t.port, req, conns=64,
                                                     duration=args.duration, expect=403))
                sql1, up1 = metric(t.port, "gatehouse_store_queries_total"), upstream_requests(up)
                out["denials"].setdefault(key, []).append({
                    "per_s": res.throughput, "errors": res.errors, "answers": res.total,
                    "sql": sql1 - sql0, "upstream": up1 - up0})
                log(f"rep {rep + 1} 1020 {key:<5} {res.throughput:,.0f}/s  other answers "
                    f"{res.errors}  SQL {sql1 - sql0:g}  upstream {up1 - up0}")
    return out


def render(r: dict[str, Any], args: argparse.Namespace) -> None:
    med = statistics.median
    print(f"\n## Edge ({r['when']}, {r['machine']}; {args.repeats} repeat(s) of "
          f"{args.duration:g} s, medians)\n")
    print("| rate | direct p50 | none: added p50 / p99 | 10k rules: added p50 / p99 | "
          "10k / none (added p50) |")
    print("|---|---|---|---|---|")
    for rate, cells in r["latency"].items():
        d50 = med(c["p50"] for c in cells["direct"])
        d99 = med(c["p99"] for c in cells["direct"])
        row = {k: (med(c["p50"] for c in cells[k]) - d50, med(c["p99"] for c in cells[k]) - d99)
               for k in ("edge-none", "edge-10k")}
        ratio = row["edge-10k"][0] / row["edge-none"][0] if row["edge-none"][0] > 0 else \
            float("nan")
        print(f"| {float(rate):,.0f}/s | {d50:.2f} ms | {row['edge-none'][0]:+.3f} / "
              f"{row['edge-none'][1]:+.3f} ms | {row['edge-10k'][0]:+.3f} / "
              f"{row['edge-10k'][1]:+.3f} ms | {ratio:.2f}× |")
    none, tenk = med(r["max"]["none"]), med(r["max"]["10k"])
    print(f"\nmax chat completions, one worker: none {none:,.0f}/s, 10k rules {tenk:,.0f}/s "
          f"({tenk / none:.2f}×)\n")
    print("| 1020 answers | per second (one worker) | other answers | SQL statements | "
          "upstream requests |")
    print("|---|---|---|---|---|")
    for key, runs in r["denials"].items():
        print(f"| {key} | {med(x['per_s'] for x in runs):,.0f} | "
              f"{sum(x['errors'] for x in runs)} | {sum(x['sql'] for x in runs):g} | "
              f"{sum(x['upstream'] for x in runs)} |")
    print(f"| (floor: GET /healthz, 200) | {med(r['floor']):,.0f} | | | |")
    print(f"\n(target: ≥ 20,000 denials/s; elapsed {r['elapsed_s']:.0f} s; raw: {args.json})")


if __name__ == "__main__":
    sys.exit(main())
