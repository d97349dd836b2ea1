"""PostgreSQL cut for CUT s under three replicas behind nginx: the replicas reach the store through
a TCP forwarder the test cuts (connections reset, new ones refused — a stopped server; the shared
PostgreSQL keeps serving the other tests) under a steady load of chat completions.

What clients see is asserted: keys verified before the cut keep being served past
``key_cache_ttl`` (0 failures), a key never seen gets 503 ``identity_unavailable`` with
Retry-After, no 500s, the status page (/status and its JSON) is served throughout; and after
the store is back every answer given is in the request log (records written == answers, 0
dropped)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.test_status import FAST_STATUS
from tests.support import services
from tests.support.procs import free_port
from tests.support.replicas import Replicas, replicas_behind_nginx
from tests.support.steady import SteadyLoad, by_status
from tests.support.tcpproxy import TcpProxy, tcp_proxy

CUT = 30.0
LEAD, TAIL = 3.0, 6.0
RATE = 25.0
KEY_CACHE_TTL = 5.0  # (default 10): the cut outlasts it six times over
BOUND = 10.0  # seconds any answer may take while the store is gone (clients wait 30 s)


@pytest.fixture(scope="module")
def cluster(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Replicas, TcpProxy]]:
    tmp = tmp_path_factory.mktemp("store-cut")
    with services.pg_database() as database, services.private_redis(free_port()) as redis:
        target = urlsplit(database.replace("+asyncpg", ""))
        assert target.hostname and target.port
        with tcp_proxy(target.hostname, target.port) as proxy:
            through = database.replace(f"@{target.hostname}:{target.port}/",
                                       f"@127.0.0.1:{proxy.port}/")
            config: dict[str, Any] = {
                "storage": {"database_url": through, "state_url": redis},
                "identity": {"require_key": True, "secret": "store-cut-secret-" + "s" * 30,
                             "key_cache_ttl": KEY_CACHE_TTL},
                "edge": {"trusted_proxies": ["127.0.0.1/32"]},
                "status": FAST_STATUS,  # the page rebuilt every second: from the store, or not
                "telemetry": {"access_log": False},
            }
            direct = {**config, "storage": {"database_url": database, "state_url": redis}}
            with replicas_behind_nginx(proc_dir, tmp, config, direct) as replicas:
                yield replicas, proxy


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                      headers={"authorization": f"Bearer {key}"})


def test_a_store_cut_under_load_costs_no_verified_call_and_no_record(
        cluster: tuple[Replicas, TcpProxy]) -> None:
    replicas, proxy = cluster
    seen = [replicas.cli("keys", "create", "acme/bot") for _ in range(3)]
    unseen = replicas.cli("keys", "create", "acme/bot")
    for gw in replicas.gateways:  # each key verified (and cached) on every replica
        for key in seen:
            assert chat(gw.url, key).status_code == 200
    time.sleep(1.5)  # their records flushed (every second)
    written_before = replicas.metric("gatehouse_request_log_written_total")
    refused: list[httpx.Response] = []
    pages: list[tuple[float, int, int, float]] = []  # when, /status, summary.json, seconds
    with SteadyLoad(replicas.url, seen, model="demo", rate=RATE,
                    seconds=LEAD + CUT + TAIL) as load:
        load.at(LEAD)
        proxy.cut()
        cut_at = load.elapsed()
        try:
            while load.elapsed() < cut_at + CUT:
                started = time.monotonic()
                page, summary = replicas.get("/status"), replicas.get("/api/v2/summary.json")
                assert summary.json()["page"]["name"]
                pages.append((load.elapsed(), page.status_code, summary.status_code,
                              time.monotonic() - started))
                refused.append(chat(replicas.url, unseen))
                time.sleep(1)
        finally:
            proxy.restore()
        restored = load.elapsed()
    answers = load.answers
    during = [a for a in answers if a.sent >= cut_at and a.answered < restored]
    print(f"\nPostgreSQL cut {restored - cut_at:.1f} s under {RATE:g}/s through nginx to 3 "
          f"replicas: all {by_status(answers)} ({len(during)} sent and answered during the "
          f"cut); slowest {max(a.took for a in answers):.2f} s; a key never seen: "
          f"{sorted({r.status_code for r in refused})} x {len(refused)}; status page "
          f"{sorted({(p, s) for _, p, s, _ in pages})} x {len(pages)}, slowest "
          f"{max(t for *_, t in pages):.2f} s; stale-served "
          f"{replicas.metric('gatehouse_identity_stale_total'):.0f}")

    # verified keys: not one failure, each answer with a request id, in bounded time
    assert by_status(answers) == {(200, None): len(answers)}, by_status(answers)
    assert len(during) >= RATE * (CUT - 2)
    assert all(a.request_id and a.request_id.startswith("req_") for a in answers)
    assert max(a.took for a in answers) < BOUND
    assert replicas.metric("gatehouse_identity_stale_total") > 0  # past key_cache_ttl
    # a key never seen: an honest 503, never a guess, never a 500
    for r in refused:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "identity_unavailable"
        assert float(r.headers["retry-after"]) >= 1 and r.headers["x-request-id"]
    # the status page was served throughout
    assert {(p, s) for _, p, s, _ in pages} == {(200, 200)}
    assert max(t for *_, t in pages) < BOUND

    # the store back: the new key works, and every answer given is in the request log
    deadline = time.monotonic() + 20
    tries = 1
    while (r := chat(replicas.url, unseen)).status_code != 200:
        assert time.monotonic() < deadline, f"store back, still {r.status_code}: {r.text}"
        time.sleep(0.5)
        tries += 1
    given = len(answers) + len(refused) + tries  # each try until the store was back, too
    deadline = time.monotonic() + 20
    while (written := replicas.metric("gatehouse_request_log_written_total")
           - written_before) < given:
        assert time.monotonic() < deadline, (written, given)
        time.sleep(0.5)
    time.sleep(1.5)  # one more flush: nothing beyond the answers either
    written = replicas.metric("gatehouse_request_log_written_total") - written_before
    dropped = replicas.metric("gatehouse_request_log_dropped_total")
    print(f"request log: {written:.0f} records written for {given} answers, {dropped:.0f} "
          "dropped")
    assert dropped == 0 and written == given
