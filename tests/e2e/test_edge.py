"""The edge in real gateway processes: a burst banned and the ban expiring, a ban made by one
process enforced by another over Redis, the 1020 answer through the official openai SDK and as
a page, and its Ray ID found with ``gatehouse rays show``.

Clients are told apart by ``X-Forwarded-For`` from 127.0.0.1, set as a trusted proxy (as
nginx in front would be), so no test bans 127.0.0.1 itself in the shared Redis."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.support.procs import Gateway
from tests.support.services import REDIS_URL

HELLO = [{"role": "user", "content": "hello"}]


def somebody() -> str:
    """A fresh client address (in 100.64.0.0/10), so runs and tests never share bans."""
    n = secrets.randbits(22)
    return f"100.{64 + (n >> 16)}.{(n >> 8) & 0xFF}.{n & 0xFF}"


def edge(**extra: Any) -> dict[str, Any]:
    return {"trusted_proxies": ["127.0.0.1/32", "::1/128"], **extra}


def as_(who: str) -> dict[str, str]:
    return {"x-forwarded-for": who}


def test_a_burst_is_banned_and_the_ban_expires(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"edge": edge(detector={"max_requests_per_address": 30,
                                               "ban_seconds": 6})})
    who, bystander = somebody(), somebody()
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        codes = [c.get("/v1/models", headers=as_(who)).status_code for _ in range(40)]
        assert codes == [200] * 30 + [403] * 10
        r = c.get("/v1/models", headers=as_(who))
        assert r.json()["error"]["code"] == "1020" and int(r.headers["retry-after"]) <= 6
        assert c.get("/v1/models", headers=as_(bystander)).status_code == 200
        time.sleep(6.3)
        assert c.get("/v1/models", headers=as_(who)).status_code == 200
    assert gw.metric("gatehouse_edge_bans_total", cause="requests") == 1
    assert gw.metric("gatehouse_edge_blocks_total", rule="ban") == 11
    # the ban and its expiry are logged with the reason
    log = gw.log.read_text()
    assert f"banned {who} for 6 s until" in log and "more than 30 requests in 10 s" in log


def test_a_ban_made_by_one_process_is_enforced_by_another_over_redis(
        start_gateway: Callable[..., Gateway]) -> None:
    config = {"storage": {"state_url": REDIS_URL},
              "edge": edge(detector={"max_requests_per_address": 10, "ban_seconds": 30})}
    one, two = start_gateway(config), start_gateway(config)
    who = somebody()
    try:
        with httpx.Client(timeout=10) as c:
            assert c.get(two.url + "/v1/models", headers=as_(who)).status_code == 200
            codes = [c.get(one.url + "/v1/models", headers=as_(who)).status_code
                     for _ in range(12)]
            assert codes[:10] == [200] * 10 and codes[10:] == [403, 403]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # the broadcast takes a moment
                r = c.get(two.url + "/v1/models", headers=as_(who))
                if r.status_code == 403:
                    break
                time.sleep(0.02)
            assert r.status_code == 403 and r.json()["error"]["code"] == "1020"
            assert "blocked for a while" in r.json()["error"]["message"]
            # …with no Redis round trip per request: two's answers come from its mirror
            assert c.get(two.url + "/v1/models", headers=as_(somebody())).status_code == 200
    finally:
        subprocess.run([sys.executable, "-m", "gatehouse", "bans", "remove", who, "--config",
                        str(one.config_path)], capture_output=True, timeout=30)
    with httpx.Client(timeout=10) as c:
        deadline = time.monotonic() + 15
        while c.get(two.url + "/v1/models", headers=as_(who)).status_code != 200:
            assert time.monotonic() < deadline, "the CLI's unban did not reach the gateway"
            time.sleep(0.05)


def test_1020_through_the_openai_sdk_as_a_page_and_by_ray(
        start_gateway: Callable[..., Gateway]) -> None:
    who = somebody()
    gw = start_gateway({"edge": edge(rules=[{"action": "deny", "cidr": who,
                                             "name": "e2e-blocked"}])})
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=2,
                        default_headers=as_(who))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk.chat.completions.create(model="demo", messages=HELLO)  # type: ignore[arg-type]
    err = caught.value
    ray = err.response.headers["gatehouse-ray"]
    assert err.status_code == 403 and err.code == "1020" and err.type == "access_denied"
    assert err.request_id and err.request_id.startswith("req_")
    assert err.response.json()["ray_id"] == ray and ray in str(err)
    record = gw.record(err.request_id)
    assert record["status"] == 403 and record["error_code"] == "1020"
    assert record["client"] == who and ray in record["error_cause"]
    assert len(gw.records()) == 1  # 403 is not retried by the SDK: one request, one record

    page = httpx.get(gw.url + "/login", headers={**as_(who), "accept": "text/html"})
    assert page.status_code == 403 and "Error 1020" in page.text
    assert page.headers["gatehouse-ray"] in page.text and "may not be your fault" in page.text

    deadline = time.monotonic() + 10
    while True:  # rays are written in batches about every second
        shown = subprocess.run([sys.executable, "-m", "gatehouse", "rays", "show", ray,
                                "--config", str(gw.config_path)], capture_output=True,
                               text=True, timeout=30, env={"COLUMNS": "200", "PATH": ""})
        if shown.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert who in shown.stdout and "e2e-blocked" in shown.stdout
    assert "/v1/chat/completions" in shown.stdout
