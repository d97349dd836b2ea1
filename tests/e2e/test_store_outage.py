"""A store outage is not an API outage: a real gateway process on PostgreSQL, reached through a
TCP forwarder the test cuts (PostgreSQL itself keeps serving the other tests). Keys verified
before the outage keep working past ``key_cache_ttl``; a key never seen gets an honest 503;
when the store comes back, everything works again and the records of the outage are in the
request log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai

from tests.e2e.test_identity import chat, cli, pg_database  # noqa: F401  (a fixture)
from tests.support.procs import Gateway, write_toml
from tests.support.tcpproxy import tcp_proxy

BODY = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


def post(gw: Gateway, key: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=BODY, timeout=30,
                      headers={"authorization": f"Bearer {key}"})


def test_keys_seen_before_a_store_outage_keep_working_through_it(
        tmp_path: Path, pg_database: str,  # noqa: F811
        start_gateway: Callable[..., Gateway]) -> None:
    target = urlsplit(pg_database.replace("+asyncpg", ""))
    assert target.hostname and target.port
    identity: dict[str, Any] = {"require_key": True, "secret": "outage-secret-" + "y" * 30,
                                "key_cache_ttl": 1, "key_stale_ttl": 600}
    direct = tmp_path / "direct.toml"  # the CLI reaches PostgreSQL itself
    write_toml(direct, {"storage": {"database_url": pg_database}, "identity": identity})
    cli(direct, "migrate")
    cli(direct, "orgs", "create", "acme")
    cli(direct, "projects", "create", "acme/bot")
    seen = cli(direct, "keys", "create", "acme/bot").strip()
    unseen = cli(direct, "keys", "create", "acme/bot").strip()

    with tcp_proxy(target.hostname, target.port) as proxy:
        through = pg_database.replace(f"{target.hostname}:{target.port}",
                                      f"127.0.0.1:{proxy.port}")
        gw = start_gateway({"storage": {"database_url": through}, "identity": identity})
        assert chat(gw, seen).choices[0].message.content  # verified and cached

        proxy.cut()
        time.sleep(1.5)  # past key_cache_ttl: every entry must be re-checked, and cannot be
        answers = [post(gw, seen) for _ in range(20)]
        assert [r.status_code for r in answers] == [200] * 20, answers[-1].text
        assert gw.metric("gatehouse_identity_stale_total") >= 20

        refused = post(gw, unseen)  # never verified: nothing to vouch for it
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "identity_unavailable" and error["type"] == "server_error"
        assert refused.headers["retry-after"] and refused.headers["x-request-id"]
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=unseen, max_retries=0) as client:
            try:
                client.chat.completions.create(**BODY)
            except openai.InternalServerError as exc:
                assert exc.status_code == 503 and exc.code == "identity_unavailable"
            else:
                raise AssertionError("an unverifiable key was let in")

        proxy.restore()
        deadline = time.monotonic() + 20
        while (r := post(gw, unseen)).status_code != 200:
            assert time.monotonic() < deadline, f"store back, still {r.status_code}: {r.text}"
            time.sleep(0.2)
        assert post(gw, seen).status_code == 200
        # the records of the outage waited in the gateway and reached the request log after it
        during = answers[7].headers["x-request-id"]
        deadline = time.monotonic() + 20
        while True:
            shown = subprocess.run(
                [sys.executable, "-m", "gatehouse", "requests", "show", during, "--json",
                 "--config", str(direct)], capture_output=True, text=True, timeout=60)
            if shown.returncode == 0:
                break
            assert time.monotonic() < deadline, shown.stdout + shown.stderr
            time.sleep(0.5)
        record = json.loads(shown.stdout)
        assert record["status"] == 200 and record["request_id"] == during
        assert gw.metric("gatehouse_request_log_dropped_total") == 0
        gw.stop()
    assert "Traceback" not in gw.log.read_text()
