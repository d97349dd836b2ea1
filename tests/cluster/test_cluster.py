"""Three gateway replicas on one PostgreSQL and one Redis, behind a real nginx running the
shipped configuration (deploy/nginx/gatehouse.conf): bounded load through it with the official
SDK, limits that hold across replicas, and one replica killed with SIGKILL mid-load.

Everything listens on 127.0.0.1; every load is bounded in count and time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_identity import cli
from tests.support import services
from tests.support.nginx import running_nginx, shipped_site
from tests.support.procs import Gateway, Upstream, free_port, write_toml

REPLICAS = 3
LIMIT = 150  # requests a minute for each of the "metered" tier's keys
ORG_LIMIT = 250  # requests a minute for the org's "metered" keys together
CLIENTS = 200  # concurrent clients of the limits test
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@dataclass
class Cluster:
    url: str
    replicas: list[Gateway]
    config: Path  # for the CLI
    start: Callable[[], Gateway]
    key: str  # standard tier: no limits
    redis_port: int  # the cluster's own Redis: its command counts are the cluster's alone

    def metered_key(self) -> str:
        return cli(self.config, "keys", "create", "acme/bot", "--tier", "metered").strip()

    def served_by(self) -> list[float]:
        return [gw.metric("gatehouse_requests_total", endpoint="chat.completions")
                if gw.proc.poll() is None else 0.0 for gw in self.replicas]


@pytest.fixture(scope="module")
def cluster(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    up = Upstream("cluster", proc_dir, ms_per_token=15)  # 8 tokens: ~120 ms an answer
    redis_port = free_port()
    with services.pg_database() as database, services.private_redis(redis_port) as redis:
        config: dict[str, Any] = {
            "storage": {"database_url": database, "state_url": redis},
            "identity": {"require_key": True, "secret": "cluster-secret-" + "z" * 30},
            "edge": {"trusted_proxies": ["127.0.0.1/32"]},
            "upstreams": {"u": {"base_url": up.url + "/v1"}},
            "models": {"m": {"backends": [{"upstream": "u", "model": "test-model"}]}},
            "tiers": {"metered": {"limits": {"requests_per_minute": LIMIT},
                                  "org_limits": {"requests_per_minute": ORG_LIMIT}}},
            "telemetry": {"access_log": False},
            # exact counts: a replica starved for 2 s must not take Redis for gone and count
            # on its local share (no test here stops Redis)
            "quota": {"limiter_timeout": 10},
        }
        replicas: list[Gateway] = []

        def start() -> Gateway:
            gw = Gateway(proc_dir, config)
            replicas.append(gw)
            return gw

        try:
            for _ in range(REPLICAS):  # the first migrates the store; the others find it done
                start()
            cli_config = tmp / "cli.toml"
            write_toml(cli_config, config)
            cli(cli_config, "orgs", "create", "acme")
            cli(cli_config, "projects", "create", "acme/bot")
            key = cli(cli_config, "keys", "create", "acme/bot").strip()
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with running_nginx(tmp, shipped_site(port, [gw.port for gw in replicas]),
                               url + "/healthz"):
                yield Cluster(url, replicas, cli_config, start, key, redis_port)
        finally:
            for gw in replicas:
                gw.stop()
            up.stop()


@dataclass
class Answer:
    status: int
    request_id: str | None
    code: str | None
    at: float  # when it was sent (monotonic)
    key: int = 0  # which of the keys it was sent with


def load(url: str, key: str, count: int, clients: int, *, stream: bool = False,
         pause: float = 0.0) -> list[Answer]:
    """``count`` chat completions from ``clients`` threads through ``url``; each thread keeps
    its own keep-alive connection. Bounded: every call has a 30 s timeout."""
    answers: list[Answer] = []
    lock = threading.Lock()
    per = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]

    def run(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30,
                          headers={"authorization": f"Bearer {key}"}) as c:
            for _ in range(n):
                sent = time.monotonic()
                try:
                    if stream:
                        with c.stream("POST", "/v1/chat/completions",
                                      json={**BODY, "stream": True}) as r:
                            text = "".join(r.iter_text())
                            ok = r.status_code == 200 and text.rstrip().endswith("[DONE]")
                            status = r.status_code if ok or r.status_code != 200 else 0
                            answer = Answer(status, r.headers.get("x-request-id"), None, sent)
                    else:
                        r = c.post("/v1/chat/completions", json=BODY)
                        code = None
                        if r.status_code != 200 and "json" in r.headers.get("content-type", ""):
                            code = r.json()["error"]["code"]
                        answer = Answer(r.status_code, r.headers.get("x-request-id"), code, sent)
                except httpx.HTTPError:
                    answer = Answer(-1, None, None, sent)  # the connection broke
                with lock:
                    answers.append(answer)
                if pause:
                    time.sleep(pause)

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(run, n) for n in per]:
            f.result()
    return answers


def test_load_through_nginx_is_spread_over_the_replicas_and_all_answered(
        cluster: Cluster) -> None:
    before = cluster.served_by()
    answers = load(cluster.url, cluster.key, 240, 12) + \
        load(cluster.url, cluster.key, 60, 6, stream=True)
    assert Counter(a.status for a in answers) == {200: 300}
    ids = [a.request_id for a in answers]
    assert all(i and i.startswith("req_") for i in ids) and len(set(ids)) == 300
    served = [after - b for after, b in zip(cluster.served_by(), before, strict=True)]
    assert sum(served) == 300
    # least_conn spreads them (~100 each; a replica starved by a busy machine takes fewer)
    assert all(s >= 15 for s in served), served


async def burst(url: str, keys: list[str], count: int, clients: int) -> list[Answer]:
    """``count`` chat completions from ``clients`` concurrent clients (one connection each),
    taking turns over ``keys``. Bounded: every call has a 30 s timeout."""
    todo = iter(range(count))
    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        async def client() -> None:
            for n in todo:  # shared: each call taken by one client
                sent = time.monotonic()
                try:
                    r = await c.post("/v1/chat/completions", json=BODY, headers={
                        "authorization": f"Bearer {keys[n % len(keys)]}"})
                except httpx.HTTPError:
                    answers.append(Answer(-1, None, None, sent, n % len(keys)))
                    continue
                code = r.json()["error"]["code"] if r.status_code != 200 else None
                answers.append(Answer(r.status_code, r.headers.get("x-request-id"), code,
                                      sent, n % len(keys)))

        await asyncio.gather(*(client() for _ in range(clients)))
    return answers


def test_200_clients_on_three_replicas_get_exactly_the_limit_at_most_one_round_trip_each(
        cluster: Cluster) -> None:
    """Two keys of one org, each limited to LIMIT a minute, the org to ORG_LIMIT: 200
    concurrent clients send 3 × ORG_LIMIT calls through nginx to the 3 replicas within one
    minute, alternating the keys. Exactly ORG_LIMIT are admitted (not one over, every one of
    the limit used), the first key at most LIMIT of them, and
    Redis — the cluster's own, so its counters are the cluster's alone — ran at most one quota
    script per call (the reservations a replica asks for in one turn of its loop share one)."""
    keys = [cluster.metered_key() for _ in range(2)]
    count = 3 * ORG_LIMIT
    # calendar-minute windows: the burst starts early enough in a minute to end in it (a
    # loaded 2-core CI machine took 23 s over it)
    if time.time() % 60 > 15:
        time.sleep(61 - time.time() % 60)
    minute = int(time.time() // 60)
    def trips() -> Counter[str]:
        return Counter({kind: sum(gw.metric("gatehouse_quota_round_trips_total", kind=kind)
                                  for gw in cluster.replicas) for kind in ("reserve", "settle", "read")})

    before, trips_before = services.commands(cluster.redis_port), trips()
    started = time.monotonic()
    answers = asyncio.run(burst(cluster.url, keys, count, CLIENTS))
    took = time.monotonic() - started
    assert int(time.time() // 60) == minute, f"the burst ({took:.1f} s) crossed a minute"
    # the last settles ride out within 50 ms (docs/quotas.md) on a quiet machine: Redis's
    # counters are read between two equal readings of the replicas', 0.2 s apart
    deadline = time.monotonic() + 10
    seen = trips()
    while True:
        time.sleep(0.2)
        after, again = services.commands(cluster.redis_port), trips()
        if again == seen or time.monotonic() > deadline:
            break
        seen = again
    sent = again - trips_before
    counts = Counter(a.status for a in answers)
    # none over, none lost: exactly the limit admitted, every other call refused with an
    # answer — 429, or on an overloaded machine a rare 503 "try again" (a CI run beside the
    # suite had 1 in 750; which stage gave it was not recorded: the codes are listed)
    busy = [a for a in answers if a.status == 503]
    assert counts[200] == ORG_LIMIT, counts
    assert counts[429] + len(busy) == count - ORG_LIMIT, counts
    assert len(busy) <= count // 100, (counts, Counter(a.code for a in busy))
    assert {a.code for a in answers if a.status == 429} == {"rate_limit_exceeded"}
    per_key = Counter(a.key for a in answers if a.status == 200)
    assert all(n <= LIMIT for n in per_key.values()), per_key
    scripts = sum(after.get(c, 0) - before.get(c, 0) for c in ("evalsha", "eval"))
    connects = {c: after.get(c, 0) - before.get(c, 0) for c in ("hello", "ping")}
    print(f"\n{count} calls from {CLIENTS} clients over {REPLICAS} replicas in {took:.1f} s: "
          f"{dict(counts)}; per key {dict(per_key)}; Redis ran {scripts} quota scripts "
          f"({scripts / count:.3f} per call): {sent['reserve']} reservations, "
          f"{sent['settle']} settles on their own, {sent['read']} reads; connections opened and pings {connects}")
    # On the request path at most one round trip per call: its reservation, alone or with
    # the others its replica asked for in the same turn of its loop. A settle rides along
    # with a later reservation, or — when none comes within 50 ms — goes out on its own, off
    # the request path; only admitted calls have anything to settle. What the replicas say
    # they sent is what Redis ran.
    assert 0 < sent["reserve"] <= count, sent
    assert sent["settle"] <= ORG_LIMIT, sent
    assert scripts == sent["reserve"] + sent["settle"], (scripts, sent)  # (reads: no script)


def test_a_replica_killed_mid_load_costs_only_its_requests_in_flight(cluster: Cluster) -> None:
    killed = cluster.replicas[1]
    results: list[list[Answer]] = []
    clients = 12
    loader = threading.Thread(target=lambda: results.append(
        load(cluster.url, cluster.key, 360, clients, pause=0.1)))  # >= 3 s of load
    loader.start()
    time.sleep(1.5)
    kill_at = time.monotonic()
    killed.proc.kill()  # SIGKILL: no goodbye, its connections reset
    loader.join(120)
    assert not loader.is_alive()
    answers = results[0]
    assert len(answers) == 360
    failed = [a for a in answers if a.status != 200]
    print(f"\nkill -9 of 1 of {REPLICAS} replicas under {clients} clients: "
          f"{len(failed)} of {len(answers)} failed ({dict(Counter(a.status for a in failed))})")
    # only requests that were in flight on the killed replica can fail: at most one per client
    assert len(failed) <= clients, Counter(a.status for a in failed)
    assert all(a.status in (502, -1) for a in failed), Counter(a.status for a in failed)
    assert all(a.at < kill_at + 0.5 for a in failed)  # nothing sent after the kill failed
    after = [a for a in answers if a.at > kill_at + 0.5]
    assert after and all(a.status == 200 for a in after)
    # the survivors took the rest
    alive = [gw for gw in cluster.replicas if gw.proc.poll() is None]
    assert len(alive) == REPLICAS - 1
    # a replacement joins: nginx sends it traffic again once its fail_timeout has passed
    cluster.replicas.remove(killed)
    killed.stop()
    replacement = cluster.start()
    assert replacement.port != killed.port  # (a new port: the site config lists the old one)
    answers = load(cluster.url, cluster.key, 60, 6)
    assert Counter(a.status for a in answers) == {200: 60}
