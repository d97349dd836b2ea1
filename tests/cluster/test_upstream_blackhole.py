"""The upstream goes silent under three replicas behind nginx: frozen with SIGSTOP (its
connections stay open, new ones are accepted by the kernel, nothing answers) for FREEZE s
under a steady load of streamed and whole (non-streamed) chat completions from three callers.

What clients see is asserted: no 500s and no hung calls; a call that was waiting gets the
documented 504 ``upstream_timeout`` — a stream within ``first_byte_timeout``, a whole answer
within ``total_timeout`` (a whole answer has no first byte before it is done: docs/configuration.md)
— then each replica's circuit breaker opens and answers at once, 503 ``upstream_unavailable``
with Retry-After; every answer carries a request id; after SIGCONT everything is served again
within a stated bound, and the status page shows the model's component down and an incident
while it lasts."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_status import FAST_STATUS
from tests.support import services
from tests.support.procs import Upstream, free_port
from tests.support.replicas import Replicas, replicas_behind_nginx
from tests.support.steady import SteadyLoad, by_status

FIRST_BYTE = 2.0  # first_byte_timeout: a stream's first token
CONNECT = 3.0  # connect_timeout (the default): a connection, from the pool or made
TOTAL = 4.0  # total_timeout: a whole answer
COOLDOWN = 4.0  # breaker_cooldown
# nginx, the replicas and the load generator on two shared cores, beside the rest of the
# suite (CI: 4 test processes): an answer 2 s late is the machine, not the gateway (a
# timeout it did not apply would be ~600 s, the default total_timeout)
SLACK = 3.0
# how late a single answer may be, on top of the timeout that ended it: a CI run measured a
# fast 503 at 5.4 s and 504s 1.7 s past their timeouts; a timeout not applied is minutes
TIMEOUT_SLACK = 8.0
RATE = 24.0  # calls a second, one in two streamed, from three callers (keys)
LEAD, FREEZE, TAIL = 4.0, 20.0, 20.0
# each replica's breaker opens a bucket (breaker_window / 10: 6 s) after its first timeout
# (rule 2b, docs/configuration.md); the first timeouts come FIRST_BYTE s after the freeze
OPEN_BY = FIRST_BYTE + 6.0 + SLACK
# after SIGCONT: a circuit half-opens within its cooldown, its probe succeeds at once; the
# upstream first works through the connections it accepted while frozen
RECOVERY = COOLDOWN + FIRST_BYTE + 2 * SLACK


@pytest.fixture(scope="module")
def cluster(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Replicas, Upstream]]:
    tmp = tmp_path_factory.mktemp("blackhole")
    up = Upstream("blackhole", proc_dir)
    with services.pg_database() as database, services.private_redis(free_port()) as redis:
        config: dict[str, Any] = {
            "storage": {"database_url": database, "state_url": redis},
            "identity": {"require_key": True, "secret": "blackhole-secret-" + "x" * 30},
            "edge": {"trusted_proxies": ["127.0.0.1/32"]},
            "upstreams": {"u": {"base_url": up.url + "/v1", "connect_timeout": CONNECT,
                                "first_byte_timeout": FIRST_BYTE,
                                "total_timeout": TOTAL, "breaker_cooldown": COOLDOWN}},
            "models": {"m": {"backends": [{"upstream": "u", "model": "test-model"}]}},
            "status": FAST_STATUS,
            "telemetry": {"access_log": False},
        }
        try:
            with replicas_behind_nginx(proc_dir, tmp, config) as replicas:
                yield replicas, up
        finally:
            up.proc.send_signal(signal.SIGCONT)
            up.stop()


def component(replicas: Replicas, name: str) -> tuple[str, int]:
    """The model component's state on the status page, and how many incidents it shows."""
    summary = replicas.get("/api/v2/summary.json").json()
    states = {c["name"]: c["status"] for c in summary["components"]}
    return states[name], len(summary["incidents"])


def test_a_frozen_upstream_gets_timeouts_then_fast_503s_then_recovers(
        cluster: tuple[Replicas, Upstream]) -> None:
    replicas, up = cluster
    keys = [replicas.cli("keys", "create", "acme/bot") for _ in range(3)]
    assert component(replicas, "m") == ("operational", 0)
    seen: list[tuple[float, str, int]] = []  # the status page during the run
    with SteadyLoad(replicas.url, keys, rate=RATE, seconds=LEAD + FREEZE + TAIL,
                    stream_every=2) as load:
        load.at(LEAD)
        os.kill(up.proc.pid, signal.SIGSTOP)
        frozen = load.elapsed()
        try:
            while load.elapsed() < frozen + FREEZE:
                seen.append((load.elapsed(), *component(replicas, "m")))
                time.sleep(1)
        finally:
            os.kill(up.proc.pid, signal.SIGCONT)
        thawed = load.elapsed()
        while load.elapsed() < load.seconds:
            seen.append((load.elapsed(), *component(replicas, "m")))
            time.sleep(1)
    answers = load.answers
    before = [a for a in answers if a.answered < frozen]
    during = [a for a in answers if a.sent >= frozen and a.answered < thawed]
    later = [a for a in answers if a.sent >= thawed + RECOVERY]
    timeouts = [a for a in answers if a.status == 504]
    fast = [a for a in during if a.status == 503]
    opened = [a for a in during if a.sent >= frozen + OPEN_BY]
    print(f"\nupstream frozen {thawed - frozen:.1f} s under {RATE:g}/s through nginx to 3 "
          f"replicas: before {by_status(before)}; during {by_status(during)}; all "
          f"{by_status(answers)}; 504s took {min(a.took for a in timeouts):.2f}-"
          f"{max(a.took for a in timeouts):.2f} s; 503s at most "
          f"{max((a.took for a in fast), default=0):.3f} s")
    shown = [(round(at - frozen, 1), state) for at, state, incidents in seen
             if state != "operational" and incidents]
    print(f"status page: model component and incident first shown {shown[:1]} s into the "
          f"freeze, worst {max((s for _, s in shown), default=None)}")

    # no 500s, no call without an answer, each one with a request id
    assert all(a.status in (200, 503, 504) for a in answers), by_status(answers)
    assert all(a.request_id and a.request_id.startswith("req_") for a in answers)
    assert {(a.status, a.code) for a in before} == {(200, None)}
    # the waiting calls: the documented timeout, within their timeout
    assert {a.code for a in timeouts} == {"upstream_timeout"}
    assert any(a.stream for a in timeouts) and any(not a.stream for a in timeouts)
    for a in timeouts:
        limit = FIRST_BYTE if a.stream else TOTAL
        assert limit - 0.2 <= a.took <= limit + TIMEOUT_SLACK, a
    # then the breakers: fast 503s with Retry-After, the bulk of what was sent while frozen
    assert {a.code for a in fast} == {"upstream_unavailable"}
    share = sum(1 for a in opened if a.status == 503) / len(opened)
    print(f"{share:.0%} of the calls sent {OPEN_BY:g} s or more into the freeze got a fast 503")
    assert share >= 0.8, by_status(opened)  # the rest: half-open probes, timing out
    assert all(a.retry_after and float(a.retry_after) >= 1 for a in fast)
    # not a timeout: no answer was waited for — the bulk at once (the circuit open); the
    # slowest is bounded by a connect attempt and the machine's slack (a CI run beside the
    # suite measured one at 5.4 s, in the same run as 504s 1.7 s past their timeouts)
    assert statistics.median(a.took for a in fast) < 1.0
    assert max(a.took for a in fast) < CONNECT + TIMEOUT_SLACK
    # recovery: everything sent RECOVERY s after SIGCONT is served
    assert later and {a.status for a in later} == {200}, by_status(later)
    recovered = max((a.answered for a in answers if a.status != 200 and a.sent >= thawed),
                    default=thawed) - thawed
    print(f"last failure {recovered:.1f} s after SIGCONT (bound {RECOVERY:g} s)")
    # the status page: the model's component down and an incident open while frozen
    assert shown and shown[0][0] < FREEZE, seen

