"""Identity end to end: real gateway processes, the CLI in its own processes, the official
openai SDK, PostgreSQL as the shared store and Redis as the shared state."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gatehouse.quota.overrides import RELOAD_SECONDS
from tests.support.procs import Gateway, write_toml
from tests.support import services
from tests.support.services import REDIS_URL

@pytest.fixture
def pg_database() -> Iterator[str]:
    with services.pg_database() as url:
        yield url


def cli(config: Path, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "gatehouse", *args, "--config", str(config)],
                       input=stdin, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def chat(gw: Gateway, key: str) -> Any:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
        return client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hello"}])


@pytest.fixture
def cluster(tmp_path: Path, pg_database: str,
            start_gateway: Callable[..., Gateway]) -> Iterator[tuple[Path, Gateway, Gateway]]:
    """Two gateway processes on one PostgreSQL and one Redis, sharing a server secret."""
    config: dict[str, Any] = {
        "storage": {"database_url": pg_database, "state_url": REDIS_URL},
        "identity": {"require_key": True, "secret": "e2e-shared-secret-" + "x" * 30,
                     "key_cache_ttl": 30},
        # the edge re-reads its stored rules every 30 s: on a loaded machine that lands inside
        # the bad-key flood below and would be counted as the flood's SQL
        "edge": {"rules_reload_seconds": 3600},
        # and the request log and the rollups write their batches every second or so: not
        # the flood's SQL either (they are off the request path, never one per request)
        "telemetry": {"request_log": False, "rollups": False},
        # and the status page rebuilds its snapshot from the store every 5 s
        "status": {"enabled": False},
    }
    path = tmp_path / "cluster.toml"
    write_toml(path, config)
    cli(path, "migrate")
    cli(path, "orgs", "create", "acme")
    cli(path, "projects", "create", "acme/support-bot")
    yield path, start_gateway(config), start_gateway(config)


def test_key_works_and_revocation_reaches_another_replica_before_its_cache_expires(
        cluster: tuple[Path, Gateway, Gateway]) -> None:
    path, one, two = cluster
    key = cli(path, "keys", "create", "acme/support-bot", "--tier", "standard").strip()
    assert key.startswith("gh-supportbot-")
    assert chat(one, key).choices[0].message.content
    assert chat(two, key).choices[0].message.content  # now cached on both replicas

    listing = cli(path, "keys", "list", "acme")
    assert key not in listing and key[-4:] in listing and "acme/support-bot" in listing
    key_id = next(w for w in listing.split() if w.startswith("key_"))

    cli(path, "keys", "revoke", key_id)  # a third process: announces through Redis
    revoked_at = time.monotonic()
    while True:
        r = httpx.post(two.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
        if r.status_code == 401:
            break
        # the key stays in the other replica's cache for key_cache_ttl (30 s): seen revoked
        # well before that, the announcement reached it (~50 ms on a quiet machine; a starved
        # one can take seconds for one call)
        assert time.monotonic() - revoked_at < 10.0, "replica still accepts a revoked key"
        time.sleep(0.02)
    print(f"\nrevocation seen by the other replica {time.monotonic() - revoked_at:.2f} s later")
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(one, key)
    assert exc.value.code == "invalid_api_key"
    assert exc.value.response.headers["x-request-id"].startswith("req_")


def test_unknown_key_flood_makes_no_sql_queries(cluster: tuple[Path, Gateway, Gateway]) -> None:
    path, gw, _ = cluster
    key = cli(path, "keys", "create", "acme/support-bot").strip()
    key_id = next(w for w in cli(path, "keys", "list", "acme").split() if w.startswith("key_"))
    cli(path, "keys", "revoke", key_id)
    with httpx.Client(base_url=gw.url) as client:
        first = client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
        assert first.status_code == 401  # (the one lookup this key may cost)
        before = gw.metric("gatehouse_store_queries_total")
        started = time.monotonic()
        guesses = [key[:-10] + secrets.token_hex(5) for _ in range(300)]
        guesses += ["gh-supportbot-" + secrets.token_urlsafe(34)[:46] for _ in range(300)]
        guesses += [f"sk-proj-{secrets.token_hex(24)}" for _ in range(100)]
        guesses += [key] * 100  # the revoked key, again and again
        for guess in guesses:
            r = client.get("/v1/models", headers={"authorization": f"Bearer {guess}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", guess
        after = gw.metric("gatehouse_store_queries_total")
        took = time.monotonic() - started
    # none per bad key: at most the limit overrides' background reload, one per 5 s of flood
    allowed = int(took / RELOAD_SECONDS) + 1
    assert after - before <= allowed, \
        f"{after - before} SQL statements for {len(guesses)} bad keys in {took:.1f} s"
    assert gw.metric("gatehouse_auth_total", result="invalid") >= len(guesses)


def test_sdk_error_classes(cluster: tuple[Path, Gateway, Gateway]) -> None:
    path, gw, _ = cluster
    missing = httpx.get(gw.url + "/v1/models")  # the SDK itself refuses to send no key
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    admin = cli(path, "keys", "create", "--admin").strip()
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, admin)
    key = cli(path, "keys", "create", "acme/support-bot", "--tier", "standard").strip()
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.PermissionDeniedError) as tier:
            client.chat.completions.create(model="demo", service_tier="priority",
                                           messages=[{"role": "user", "content": "x"}])
        assert tier.value.code == "service_tier_not_allowed"
        ok = client.chat.completions.create(model="demo", service_tier="flex",
                                            messages=[{"role": "user", "content": "x"}])
        assert ok.choices[0].message.content
    record = gw.record(ok._request_id)  # type: ignore[arg-type]
    assert record["key_id"].startswith("key_") and record["org"].startswith("org_")
    assert record["tier"] == "flex"  # the tier it asked for, within what its key permits
    assert key not in gw.log.read_text() and admin not in gw.log.read_text()


def test_init_then_serve_on_sqlite(tmp_path: Path) -> None:
    """The newcomer's path: `gatehouse init` writes a config and prints the first keys once."""
    config = tmp_path / "gatehouse.toml"
    r = subprocess.run([sys.executable, "-m", "gatehouse", "init", "--config", str(config)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # each key under a "# what it is" line, in order, on stdout
    keys = [line for line in r.stdout.splitlines() if line and not line.startswith("#")]
    assert len(keys) == 2 and keys[0].startswith("gh-admin-") and keys[1].startswith("gh-demo-")
    assert (tmp_path / "gatehouse.db").exists() and (tmp_path / "gatehouse.secret").exists()
    assert oct((tmp_path / "gatehouse.secret").stat().st_mode & 0o777) == "0o600"
    again = subprocess.run([sys.executable, "-m", "gatehouse", "init", "--config", str(config)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == ""  # keys are shown once
    listing = cli(config, "keys", "list")
    assert keys[1] not in listing and keys[1][-4:] in listing
    tiers = cli(config, "tiers", "list")
    for name in ("free", "plus", "pro", "standard", "priority", "flex"):
        assert name in tiers
