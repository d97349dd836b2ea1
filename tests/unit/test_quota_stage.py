"""The quota stage through the whole app in-process, with a controllable clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gatehouse.app import create_app
from gatehouse.identity.service import IdentityService
from gatehouse.quota.redis import RedisLimiter
from gatehouse.quota.stage import QuotaStage
from tests.support.services import REDIS_URL
from tests.support.tcpproxy import tcp_proxy
from tests.unit.conftest import make_settings

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 10  # 10 s into a minute
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 20}


class World:
    def __init__(self, client: httpx.AsyncClient, ids: IdentityService, now: list[float],
                 app: Any) -> None:
        self.client, self.ids, self.now, self.app = client, ids, now, app

    async def key(self, ref: str = "acme/bot", **kw: Any) -> str:
        return (await self.ids.accounts.create_key(ref, **kw))[0]

    async def chat(self, key: str | None, body: dict[str, Any] | None = None,
                   **headers: str) -> httpx.Response:
        if key:
            headers["authorization"] = f"Bearer {key}"
        return await self.client.post("/v1/chat/completions", json=body or CHAT,
                                      headers=headers)

    async def usage(self, key: str) -> dict[str, dict[str, Any]]:
        r = await self.client.get("/v1/usage", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return {f"{x['scope']}:{x['limit_name']}": x for x in r.json()["limits"]}


async def world_for(tmp: Path, **sections: Any) -> AsyncIterator[World]:
    now = [T0]
    sections["identity"] = {"require_key": True, **sections.get("identity", {})}
    settings = make_settings(tmp, **sections)
    ids = IdentityService(settings)
    app = create_app(settings, identity=ids, clock=lambda: now[0])
    await app.startup()
    await ids.accounts.create_org("acme", "standard")
    await ids.accounts.create_project("acme/bot")
    await ids.accounts.create_project("acme/other")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5)),
                               base_url="http://gw")
    yield World(client, ids, now, app)
    await client.aclose()
    await app.aclose()


def tiers(**limits: Any) -> dict[str, Any]:
    return {"tiers": {"standard": {"limits": limits}}}


def err(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


async def test_requests_per_minute_with_headers_and_reset(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(requests_per_minute=3)):
        key = await w.key()
        for remaining in (2, 1, 0):
            r = await w.chat(key)
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit-requests"] == "3"
            assert r.headers["x-ratelimit-remaining-requests"] == str(remaining)
            assert r.headers["x-ratelimit-reset-requests"] == "50s"
        refused = await w.chat(key)
        e = err(refused)
        assert refused.status_code == 429 and e["code"] == "rate_limit_exceeded"
        assert e["type"] == "requests" and "requests per min (RPM)" in e["message"]
        assert "limit 3, used 3" in e["message"]
        assert refused.headers["retry-after"] == "50" and refused.headers["retry-after-ms"] \
            == "50000"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-should-retry" not in refused.headers
        w.now[0] = T0 + 50  # the next minute: exactly when it said
        assert (await w.chat(key)).status_code == 200


async def test_tokens_are_settled_from_real_usage(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(tokens_per_minute=10_000)):
        key = await w.key()
        seen = 0
        for stream in (False, True, True):
            body = {**CHAT, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            r = await w.chat(key, body)
            assert r.status_code == 200
            if stream:
                chunks = [line for line in r.text.splitlines() if line.startswith("data: {")]

                seen += json.loads(chunks[-1][6:])["usage"]["total_tokens"]
            else:
                seen += r.json()["usage"]["total_tokens"]
        u = (await w.usage(key))["key:tokens_per_minute"]
        assert u["used"] == seen and u["remaining"] == 10_000 - seen
        assert u["resets_in"] == "50s" and u["window"] == "minute"


async def test_streams_without_client_usage_are_still_metered(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(tokens_per_minute=10_000)):
        key = await w.key()
        r = await w.chat(key, {**CHAT, "stream": True})  # no include_usage
        assert r.status_code == 200 and '"usage":{' not in r.text
        used = (await w.usage(key))["key:tokens_per_minute"]["used"]
        assert 0 < used < 200  # the real count, not zero and not the reservation


async def test_budget_is_insufficient_quota_not_retryable(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(tokens_per_day=100)):
        key = await w.key()
        while (r := await w.chat(key)).status_code == 200:
            pass
        e = err(r)
        assert r.status_code == 429 and e["code"] == "insufficient_quota"
        assert e["type"] == "insufficient_quota" and r.headers["x-should-retry"] == "false"
        assert "tokens per day" in e["message"] and "UTC" in e["message"]
        w.now[0] += 86400  # tomorrow
        assert (await w.chat(key)).status_code == 200


async def test_request_larger_than_the_limit_says_so(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(tokens_per_minute=100)):
        r = await w.chat(await w.key(), {**CHAT, "max_tokens": 500})
        e = err(r)
        assert r.status_code == 429 and e["type"] == "tokens"
        assert "Request too large" in e["message"] and r.headers["x-should-retry"] == "false"


async def test_failures_are_not_charged_and_free_their_slot(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, demo={"failure_rate": 1.0},
                             **tiers(concurrent_requests=1, requests_per_minute=100,
                                     tokens_per_minute=10_000)):
        key = await w.key()
        for _ in range(3):
            assert (await w.chat(key)).status_code >= 500  # the slot comes back each time
        u = await w.usage(key)
        assert u["key:requests_per_minute"]["used"] == 0
        assert u["key:tokens_per_minute"]["used"] == 0
        assert u["key:concurrent_requests"]["used"] == 0


async def test_project_and_org_limits_are_shared(tmp_path: Path) -> None:
    limits = {"tiers": {"standard": {"project_limits": {"requests_per_minute": 2},
                                     "org_limits": {"requests_per_minute": 3}}}}
    async for w in world_for(tmp_path, **limits):
        a, b, c = await w.key(), await w.key(), await w.key("acme/other")
        assert (await w.chat(a)).status_code == 200
        assert (await w.chat(b)).status_code == 200
        r = await w.chat(a)
        assert r.status_code == 429 and "project acme/bot" in err(r)["message"]
        assert (await w.chat(c)).status_code == 200  # another project, same org: 3rd of 3
        r = await w.chat(c)
        assert r.status_code == 429 and "org acme" in err(r)["message"]


async def test_network_limit_applies_to_anonymous_callers(tmp_path: Path) -> None:
    async for w in world_for(tmp_path, identity={"require_key": False},
                             quota={"network_limits": {"requests_per_minute": 2}}):
        assert (await w.chat(None)).status_code == 200
        assert (await w.chat("sk-someone-else")).status_code == 200
        r = await w.chat(None)
        assert r.status_code == 429 and "10.1.2.3/32" in err(r)["message"]


async def test_service_tier_picks_the_limits(tmp_path: Path) -> None:
    limits = {"tiers": {"standard": {"limits": {"requests_per_minute": 1}},
                        "flex": {"limits": {"requests_per_minute": 5}}}}
    async for w in world_for(tmp_path, **limits):
        key = await w.key()
        assert (await w.chat(key)).status_code == 200
        assert (await w.chat(key)).status_code == 429
        r = await w.chat(key, {**CHAT, "service_tier": "flex"})
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "5"


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_limiter_down_follows_the_policy(tmp_path: Path, policy: str) -> None:
    async for w in world_for(tmp_path, quota={"on_limiter_error": policy, "replicas": 2},
                             **tiers(requests_per_minute=4)):
        stage = next(s for s in w.app.routes["/v1/chat/completions"].pipeline.stages
                     if s.name == "quota")
        await stage.shared.aclose()
        stage.shared = RedisLimiter("redis://127.0.0.1:1/0", socket_timeout=0.2)  # nobody
        key = await w.key()
        if policy == "fail_closed":
            r = await w.chat(key)
            assert r.status_code == 503 and err(r)["code"] == "quota_unavailable"
            assert "retry-after" in r.headers
            continue
        statuses = [(await w.chat(key)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]  # this replica's share: 4 / 2 replicas


async def test_a_frozen_limiter_is_probed_in_the_background_not_by_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that stops answering (SIGSTOP) without closing its connections: one request
    pays the timeout, then none waits on it — a background ping finds it again."""
    import asyncio

    from gatehouse.quota import stage as quota_stage

    monkeypatch.setattr(quota_stage, "RETRY_SHARED_AFTER", 0.2)
    redis = urlsplit(REDIS_URL)
    with tcp_proxy(redis.hostname or "127.0.0.1", redis.port or 6379) as proxy:
        async for w in world_for(tmp_path, quota={"on_limiter_error": "fail_open",
                                                  "replicas": 1},
                                 **tiers(requests_per_minute=100)):
            stage = next(s for s in w.app.routes["/v1/chat/completions"].pipeline.stages
                         if s.name == "quota")
            await stage.shared.aclose()
            shared = stage.shared = RedisLimiter(f"redis://127.0.0.1:{proxy.port}/0",
                                                 socket_timeout=0.5)
            key = await w.key()
            assert (await w.chat(key)).status_code == 200
            before = shared.round_trips["reserve"]
            proxy.freeze()
            statuses = []
            for _ in range(6):  # over several probe intervals
                statuses.append((await w.chat(key)).status_code)
                await asyncio.sleep(0.1)
            assert statuses == [200] * 6  # served on the local share
            assert shared.round_trips["reserve"] - before == 1  # only the first asked Redis
            proxy.thaw()
            for _ in range(50):  # the probe finds it again
                if not stage._shared_down:
                    break
                await asyncio.sleep(0.1)
            assert not stage._shared_down
            assert (await w.chat(key)).status_code == 200
            assert shared.round_trips["reserve"] - before >= 2  # counted in Redis again


async def test_concurrency_cap_holds_under_a_burst(tmp_path: Path) -> None:
    """LiteLLM #16011 / #27900: parallel-request caps exceeded. Never here."""
    import asyncio

    async for w in world_for(tmp_path, demo={"latency_ms": 150},
                             **tiers(concurrent_requests=3)):
        key = await w.key()
        replies = await asyncio.gather(*(w.chat(key) for _ in range(20)))
        assert sum(r.status_code == 200 for r in replies) == 3
        assert all(r.status_code == 429 and r.headers["retry-after"] == "1"
                   for r in replies if r.status_code != 200)
        assert (await w.chat(key)).status_code == 200  # every slot came back


async def test_budget_is_never_overspent_by_a_burst(tmp_path: Path) -> None:
    """LiteLLM #26672 / #23714: budgets overspent while requests still succeed."""
    import asyncio

    async for w in world_for(tmp_path, **tiers(tokens_per_day=300)):
        key = await w.key()
        replies = await asyncio.gather(*(w.chat(key) for _ in range(40)))
        spent = sum(r.json()["usage"]["total_tokens"] for r in replies if r.status_code == 200)
        assert 0 < spent <= 300
        refused = [r for r in replies if r.status_code != 200]
        assert refused and all(err(r)["code"] == "insufficient_quota" for r in refused)
        used = (await w.usage(key))["key:tokens_per_day"]["used"]
        assert used == spent


async def test_refunds_prevent_false_budget_blocks(tmp_path: Path) -> None:
    """LiteLLM #22726: false "budget exceeded". Reservations are refunded to real usage, so a
    budget blocks only when real usage has reached it."""
    async for w in world_for(tmp_path, **tiers(tokens_per_day=1000)):
        key = await w.key()
        body = {**CHAT, "max_tokens": 400}  # reserves ~410; really uses ~30
        spent = 0
        for _ in range(15):
            r = await w.chat(key, body)
            assert r.status_code == 200, (spent, r.text)
            spent += r.json()["usage"]["total_tokens"]
        assert spent < 600
        assert (await w.usage(key))["key:tokens_per_day"]["used"] == spent


@pytest.mark.parametrize("timeout", [None, 0.7])
async def test_the_limiter_timeout_reaches_the_redis_client(tmp_path: Path,
                                                            timeout: float | None) -> None:
    """``[quota] limiter_timeout`` bounds each call to Redis and the wait for a pooled
    connection (2 s unless set)."""
    quota = {} if timeout is None else {"limiter_timeout": timeout}
    app = create_app(make_settings(tmp_path, storage={"state_url": REDIS_URL}, quota=quota))
    stage = next(s for s in app.routes["/v1/chat/completions"].pipeline.stages
                 if s.name == "quota")
    assert isinstance(stage, QuotaStage)
    try:
        assert isinstance(stage.shared, RedisLimiter)
        pool = stage.shared._redis.connection_pool
        expected = 2.0 if timeout is None else timeout
        assert pool.connection_kwargs["socket_timeout"] == expected
        assert pool.connection_kwargs["socket_connect_timeout"] == expected
        assert pool.timeout == expected  # type: ignore[attr-defined]  # (a BlockingConnectionPool)
    finally:
        await stage.shared.aclose()
