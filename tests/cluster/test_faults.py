"""Redis goes away under two replicas: stopped (connections refused) and frozen (SIGSTOP: the
connections stay open and nothing answers), through a TCP forwarder the test controls — the
shared Redis keeps serving the other tests. What clients see is asserted: no 500s, answers in
bounded time, limits fail open (local shares) or closed (503) per tier, and everything — the
shared counters, revocations — back without a restart."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.test_identity import cli
from tests.support import services
from tests.support.procs import Gateway, write_toml
from tests.support.tcpproxy import TcpProxy, tcp_proxy

REPLICAS = 2
OPEN_LIMIT = 40  # requests a minute for the fail-open tier: a local share of 20 per replica
BODY = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Pair:
    replicas: list[Gateway]
    proxy: TcpProxy
    config: Path

    def key(self, tier: str) -> str:
        return cli(self.config, "keys", "create", "acme/bot", "--tier", tier).strip()

    def call(self, key: str, i: int) -> tuple[int, str | None, float]:
        """One chat completion on replica ``i % 2``: status, error code, seconds taken."""
        started = time.monotonic()
        r = httpx.post(self.replicas[i % REPLICAS].url + "/v1/chat/completions", json=BODY,
                       headers={"authorization": f"Bearer {key}"}, timeout=30)
        code = r.json()["error"]["code"] if r.status_code != 200 else None
        return r.status_code, code, time.monotonic() - started


@pytest.fixture(scope="module")
def pair(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # the outage tests bound a call at 10 s: the limiter's default timeout (2 s) stays
    yield from started_pair(proc_dir, tmp_path_factory, {})


@pytest.fixture(scope="module")
def slow_pair(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # Redis far away but up: a call through the slow forwarder on a loaded machine must not
    # be taken for Redis gone (the fail-closed tier would answer 503)
    yield from started_pair(proc_dir, tmp_path_factory, {"limiter_timeout": 10})


def started_pair(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                 quota: dict[str, Any]) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("faults")
    redis = urlsplit(services.REDIS_URL)
    assert redis.hostname and redis.port
    with services.pg_database() as database, tcp_proxy(redis.hostname, redis.port) as proxy:
        config: dict[str, Any] = {
            "storage": {"database_url": database,
                        "state_url": f"redis://127.0.0.1:{proxy.port}/0"},
            "identity": {"require_key": True, "secret": "faults-secret-" + "w" * 30},
            "quota": {"replicas": REPLICAS, **quota},
            "tiers": {
                "open": {"limits": {"requests_per_minute": OPEN_LIMIT},
                         "on_limiter_error": "fail_open"},
                "closed": {"limits": {"requests_per_minute": 1000},
                           "on_limiter_error": "fail_closed"}},
            "telemetry": {"access_log": False},
        }
        replicas: list[Gateway] = []
        try:
            for _ in range(REPLICAS):
                replicas.append(Gateway(proc_dir, config))
            path = tmp / "cli.toml"
            write_toml(path, config)
            cli(path, "orgs", "create", "acme")
            cli(path, "projects", "create", "acme/bot")
            yield Pair(replicas, proxy, path)
        finally:
            for gw in replicas:
                gw.stop()


def fresh_minute(needed: float) -> None:
    """Limits count per calendar minute: start a phase with ``needed`` s left in its minute."""
    if 60 - time.time() % 60 < needed:
        time.sleep(60.5 - time.time() % 60)


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_redis_gone_no_500s_limits_per_tier_and_recovery(pair: Pair, fault: str) -> None:
    open_key, closed_key = pair.key("open"), pair.key("closed")
    for i in range(REPLICAS):  # verified (and cached) on both replicas while Redis is up
        assert pair.call(open_key, i)[0] == 200 and pair.call(closed_key, i)[0] == 200

    fresh_minute(25)
    if fault == "stopped":
        pair.proxy.cut()
    else:
        pair.proxy.freeze()
    try:
        opened, minutes = [], []
        for i in range(60):
            minutes.append(int(time.time() // 60))  # limits count per calendar minute
            opened.append(pair.call(open_key, i))
        closed = [pair.call(closed_key, i) for i in range(6)]
    finally:
        if fault == "stopped":
            pair.proxy.restore()
        else:
            pair.proxy.thaw()

    statuses = Counter(s for s, _, _ in opened + closed)
    assert not any(s >= 500 and s != 503 for s in statuses), statuses
    # fail_open: each replica counts its share (40 / 2) alone — at most the limit in all, less
    # what was counted in Redis before (the 2 calls above, when in the same minute)
    # (on a starved machine the phase may cross a minute's edge, despite fresh_minute: each
    # minute then has its own shares, and the one call in flight at the edge may count in
    # either minute)
    per_minute = Counter(m for m, (s, _, _) in zip(minutes, opened, strict=True) if s == 200)
    admitted = sum(per_minute.values())
    crossed = len(set(minutes)) > 1
    assert all(n <= OPEN_LIMIT + crossed for n in per_minute.values()), per_minute
    assert admitted >= OPEN_LIMIT - REPLICAS, Counter(s for s, _, _ in opened)
    refusals = {c for s, c, _ in opened if s != 200}
    assert refusals <= {"rate_limit_exceeded"} and (refusals or crossed), refusals
    # fail_closed: an honest 503, not a guess
    assert {(s, c) for s, c, _ in closed} == {(503, "quota_unavailable")}
    # in bounded time, frozen or not (the state layer's socket timeouts)
    assert max(t for _, _, t in opened + closed) < 10

    # back without a restart: shared counting, then a revocation reaching both replicas
    deadline = time.monotonic() + 20
    while pair.call(closed_key, 0)[0] != 200 or pair.call(closed_key, 1)[0] != 200:
        assert time.monotonic() < deadline, "fail_closed tier still refused after recovery"
        time.sleep(0.5)
    listing = cli(pair.config, "keys", "list", "acme")
    key_id = next(w for line in listing.splitlines() if open_key[-4:] in line
                  for w in line.split() if w.startswith("key_"))
    cli(pair.config, "keys", "revoke", key_id)
    deadline = time.monotonic() + 15
    while {pair.call(open_key, i)[0] for i in range(REPLICAS)} != {401}:
        assert time.monotonic() < deadline, "the revocation did not reach both replicas"
        time.sleep(0.2)


def test_a_slow_network_to_redis_costs_one_round_trip_per_request(slow_pair: Pair) -> None:
    """Redis 100 ms away each way (the forwarder holds every chunk): a request with limits pays
    one round trip (+200 ms), not two — its settle rides along with a later reservation — and
    nothing fails or is over-admitted."""
    key = slow_pair.key("closed")  # limits checked in Redis, never reached here
    for i in range(REPLICAS):  # keys verified and connections to Redis made
        assert slow_pair.call(key, i)[0] == 200

    # pairs of calls to one replica, one without and one with the delay, back to back: a busy
    # machine slows both alike (two separate medians of 20 calls moved by tens of ms in CI,
    # where a call took ~250 ms)
    near: list[float] = []
    far: list[float] = []
    try:
        for i in range(20):
            for delay, seconds in ((0.0, near), (0.1, far)):
                slow_pair.proxy.delay = delay
                status, _, took = slow_pair.call(key, i)
                assert status == 200
                seconds.append(took)
    finally:
        slow_pair.proxy.delay = 0.0
    added = statistics.median(b - a for a, b in zip(near, far, strict=True))
    print(f"\nRedis +100 ms each way: median answer {statistics.median(near) * 1000:.0f} → "
          f"{statistics.median(far) * 1000:.0f} ms (paired: +{added * 1000:.0f} ms; one round "
          "trip is +200 ms)")
    # one round trip on the request path, not two (+400 ms); the lower bound shows the delay
    # is on the path at all
    assert 0.1 <= added < 0.35, added
