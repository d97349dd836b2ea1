"""Three gateway replicas on one PostgreSQL and one Redis, behind a real nginx running the
shipped configuration (deploy/nginx/gatehouse.conf): bounded load through it with the official
SDK, limits that hold across replicas, and one replica killed with SIGKILL mid-load.

Everything listens on 127.0.0.1; every load is bounded in count and time."""

from __future__ import annotations

import re
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
from tests.support.nginx import running_nginx
from tests.support.procs import Gateway, Upstream, free_port, write_toml

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "gatehouse.conf"
REPLICAS = 3
LIMIT = 60  # requests a minute for the "metered" tier's keys
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def render(port: int, replicas: list[int]) -> str:
    """The shipped site configuration, with this test's listen address and replica ports."""
    site = SHIPPED.read_text()
    shipped = re.findall(r"server 127\.0\.0\.1:(\d+)", site)
    assert len(shipped) == len(replicas), shipped
    for old, new in zip(shipped, replicas, strict=True):
        site = site.replace(f"127.0.0.1:{old} ", f"127.0.0.1:{new} ")
    assert "listen 80;" in site
    return site.replace("listen 80;", f"listen 127.0.0.1:{port};")


@dataclass
class Cluster:
    url: str
    replicas: list[Gateway]
    config: Path  # for the CLI
    start: Callable[[], Gateway]
    key: str  # standard tier: no limits

    def metered_key(self) -> str:
        return cli(self.config, "keys", "create", "acme/bot", "--tier", "metered").strip()

    def served_by(self) -> list[float]:
        return [gw.metric("gatehouse_requests_total", endpoint="chat.completions")
                if gw.proc.poll() is None else 0.0 for gw in self.replicas]


@pytest.fixture(scope="module")
def cluster(proc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    up = Upstream("cluster", proc_dir, ms_per_token=15)  # 8 tokens: ~120 ms an answer
    with services.pg_database() as database:
        config: dict[str, Any] = {
            "storage": {"database_url": database, "state_url": services.REDIS_URL},
            "identity": {"require_key": True, "secret": "cluster-secret-" + "z" * 30},
            "edge": {"trusted_proxies": ["127.0.0.1/32"]},
            "upstreams": {"u": {"base_url": up.url + "/v1"}},
            "models": {"m": {"backends": [{"upstream": "u", "model": "test-model"}]}},
            "tiers": {"metered": {"limits": {"requests_per_minute": LIMIT}}},
            "telemetry": {"access_log": False},
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
            with running_nginx(tmp, render(port, [gw.port for gw in replicas]),
                               url + "/healthz"):
                yield Cluster(url, replicas, cli_config, start, key)
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
    assert all(s >= 30 for s in served), served  # least_conn spreads them


def test_a_limit_holds_across_the_replicas(cluster: Cluster) -> None:
    key = cluster.metered_key()
    if time.time() % 60 > 40:  # calendar-minute windows: start the burst in a fresh minute
        time.sleep(61 - time.time() % 60)
    answers = load(cluster.url, key, 3 * LIMIT, 24)
    counts = Counter(a.status for a in answers)
    assert counts == {200: LIMIT, 429: 2 * LIMIT}, counts  # not one over, none lost
    assert {a.code for a in answers if a.status == 429} == {"rate_limit_exceeded"}


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
