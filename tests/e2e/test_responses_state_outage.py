"""/v1/responses while the state layer (Redis) is cut: where each stored response lives is
kept there, so what needs it must fail honestly and what does not must keep working.

One gateway on a Redis reached through a TCP forwarder the test cuts (connections reset, new
ones refused), the official openai SDK as the client, the demo backend and the test upstream
as chat-only backends (their responses kept by the gateway itself, in the state layer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.e2e.conftest import upstream_cfg
from tests.support import services
from tests.support.procs import Gateway, Upstream
from tests.support.tcpproxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cut_redis() -> Iterator[TcpProxy]:
    redis = urlsplit(services.REDIS_URL)
    assert redis.hostname and redis.port
    with tcp_proxy(redis.hostname, redis.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def gw(proc_dir: Path, up_a: Upstream, cut_redis: TcpProxy) -> Iterator[Gateway]:
    gateway = Gateway(proc_dir, {
        "storage": {"state_url": f"redis://127.0.0.1:{cut_redis.port}/0"},
        "tiers": {"default": {"limits": {"requests_per_minute": 10_000},
                              "on_limiter_error": "fail_open"}},
        "upstreams": {"a": upstream_cfg(up_a)},
        "models": {"chatonly": {"backends": [{"upstream": "a", "model": "test-model"}]}},
    })
    yield gateway
    gateway.stop()


def answer(gw: Gateway, method: str, path: str, **kw: object) -> httpx.Response:
    started = time.monotonic()
    r = httpx.request(method, gw.url + path, timeout=30, **kw)  # type: ignore[arg-type]
    assert time.monotonic() - started < 10, "every answer within a bound while Redis is cut"
    assert r.status_code < 500 or r.status_code == 503, r.text
    assert r.headers["x-request-id"].startswith("req_")
    return r


def test_responses_while_redis_is_cut(gw: Gateway, cut_redis: TcpProxy) -> None:
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    before = {m: sdk.responses.create(model=m, input="remember me") for m in ("demo", "chatonly")}
    for m, first in before.items():  # Redis up: follow-ups work on both kinds of backend
        assert sdk.responses.create(model=m, input="again",
                                    previous_response_id=first.id).status == "completed"

    cut_redis.cut()
    try:
        # what needs no state answers as before: new responses, plain and streamed, and chat
        for m in ("demo", "chatonly"):
            made = sdk.responses.create(model=m, input="while Redis is away")
            assert made.status == "completed" and made.output_text
            events = [e.type for e in sdk.responses.create(model=m, input="stream",
                                                           stream=True)]
            assert events[0] == "response.created" and events[-1] == "response.completed"
        chat = sdk.chat.completions.create(model="demo", messages=[{"role": "user",
                                                                    "content": "hi"}])
        assert chat.choices[0].message.content

        # what needs to know where a response lives is refused honestly: 503, retry soon
        for m, first in before.items():
            r = answer(gw, "POST", "/v1/responses", json={
                "model": m, "input": "continue", "previous_response_id": first.id})
            assert r.status_code == 503, r.text
            assert float(r.headers["retry-after"]) > 0
            error = r.json()["error"]
            assert error["type"] and "cannot be looked up" in error["message"]
            for method, path in (("GET", f"/v1/responses/{first.id}"),
                                 ("GET", f"/v1/responses/{first.id}/input_items"),
                                 ("DELETE", f"/v1/responses/{first.id}")):
                r = answer(gw, method, path)
                assert r.status_code == 503 and "retry-after" in r.headers, (method, path)
        with pytest.raises(openai.APIStatusError) as refused:
            sdk.responses.create(model="demo", input="x", previous_response_id=before["demo"].id)
        assert refused.value.status_code == 503 and refused.value.request_id
    finally:
        cut_redis.restore()

    # back without a restart: the responses recorded before the cut continue, on their backend
    deadline = time.monotonic() + 20
    while True:
        r = answer(gw, "POST", "/v1/responses", json={
            "model": "demo", "input": "after", "previous_response_id": before["demo"].id})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    for m in ("chatonly", "demo"):  # kept by the gateway, in Redis (the demo is chat-only)
        kept = sdk.responses.retrieve(before[m].id)
        assert kept.id == before[m].id and kept.output_text == before[m].output_text
