"""The retry transport under the official openai SDK, and the small client, against a real
gateway making its own answers: a spent budget (429 insufficient_quota) is final, a full model
(503 at_capacity) is retried after its Retry-After. Attempts are counted in the gateway's
access log by the X-Client-Request-Id the transport sent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from gatehouse.client import (
    AtCapacity,
    Client,
    QuotaExceeded,
    RetryTransport,
    attempts_of,
)
from tests.e2e.test_identity import cli
from tests.support.procs import Gateway, open_stream

pytestmark = pytest.mark.e2e

HELLO: list[Any] = [{"role": "user", "content": "hello"}]
CONFIG: dict[str, Any] = {
    "identity": {"require_key": True},
    # one slot, and a normal-class request that finds it taken is refused at once
    # (a stream that holds it: 300 tokens × 100 ms, 30 s, however slow the steps under it)
    "demo": {"max_concurrency": 1, "ms_per_token": 100, "reply_tokens": 300},
    "admission": {"reserved_share": 0, "classes": {"normal": {"queue_timeout": 0.1,
                                                              "max_queue": 0}}},
    "tiers": {"budget": {"limits": {"tokens_per_day": 60}}},
}


class Waits(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def key_for(gw: Gateway, tier: str) -> str:
    cli(gw.config_path, "orgs", "create", f"org-{tier}")
    cli(gw.config_path, "projects", "create", f"org-{tier}/app")
    return cli(gw.config_path, "keys", "create", f"org-{tier}/app", "--tier", tier).strip()


def sdk(gw: Gateway, key: str, sleep: Callable[[float], None]) -> openai.OpenAI:
    http = httpx.Client(transport=RetryTransport(sleep=sleep))
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                         http_client=http)  # type: ignore[arg-type]


def logged(gw: Gateway, client_request_id: str, at_least: int) -> list[dict[str, Any]]:
    """The access-log records of one client request id, once ``at_least`` are written."""
    deadline = time.monotonic() + 30
    while True:
        found = [r for r in gw.records() if r.get("client_request_id") == client_request_id]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_quota_is_final_and_capacity_is_retried(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(CONFIG)
    budget_key, plain_key = key_for(gw, "budget"), key_for(gw, "standard")

    # spend the day's budget
    for _ in range(20):
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {budget_key}"},
                       json={"model": "demo", "messages": HELLO, "max_tokens": 8})
        if r.status_code == 429:
            break
    assert r.json()["error"]["code"] == "insufficient_quota"

    waits = Waits()
    with sdk(gw, budget_key, waits) as client, pytest.raises(openai.RateLimitError) as quota:
        client.chat.completions.create(model="demo", messages=HELLO, max_tokens=8)
    error = quota.value
    cid = error.response.request.headers["x-client-request-id"]
    assert error.code == "insufficient_quota" and error.request_id and waits == []
    assert error.response.headers["x-client-request-id"] == cid  # echoed by the gateway
    records = logged(gw, cid, 1)
    assert [r["request_id"] for r in records] == [error.request_id]  # one attempt, not retried

    with Client(gw.url + "/v1", api_key=budget_key, sleep=Waits()) as own, \
            pytest.raises(QuotaExceeded) as own_quota:
        own.chat("demo", HELLO, max_tokens=8)
    assert own_quota.value.attempts == 1 and own_quota.value.request_id

    # the one slot is taken: every attempt is refused 503 at_capacity, each retry after
    # waiting at least the Retry-After the gateway gave
    holder = open_stream(gw, plain_key, max_tokens=300)
    try:
        waits = Waits()
        with sdk(gw, plain_key, waits) as client, \
                pytest.raises(openai.InternalServerError) as full:
            client.chat.completions.create(model="demo", messages=HELLO, max_tokens=4)
        refused = full.value
        assert (refused.status_code, refused.code) == (503, "at_capacity")
        asked = float(refused.response.headers["retry-after-ms"]) / 1000
        assert len(waits) == 2 and min(waits) >= asked > 0
        assert attempts_of(refused.response) == 3  # type: ignore[arg-type]
        cid = refused.response.request.headers["x-client-request-id"]
        records = logged(gw, cid, 3)
        assert [(r["status"], r["error_code"]) for r in records] == [(503, "at_capacity")] * 3
        assert refused.request_id == records[-1]["request_id"]

        with Client(gw.url + "/v1", api_key=plain_key, sleep=Waits()) as own, \
                pytest.raises(AtCapacity) as own_full:
            own.chat("demo", HELLO, max_tokens=4, client_request_id="trace-cap")
        raised = own_full.value
        assert (raised.attempts, raised.client_request_id) == (3, "trace-cap")
        assert raised.request_id and raised.retry_after
        assert len(logged(gw, "trace-cap", 3)) == 3

        # the slot comes free while the client waits: the retry is served
        def free_the_slot(seconds: float) -> None:
            holder.close()
            deadline = time.monotonic() + 5
            while gw.metric("gatehouse_inflight_requests") and time.monotonic() < deadline:
                time.sleep(0.05)

        with sdk(gw, plain_key, free_the_slot) as client:
            reply = client.chat.completions.with_raw_response.create(
                model="demo", messages=HELLO, max_tokens=4)
        assert reply.parse().choices[0].message.content
        cid = reply.http_request.headers["x-client-request-id"]
        assert [r["status"] for r in logged(gw, cid, 2)] == [503, 200]
    finally:
        holder.close()
