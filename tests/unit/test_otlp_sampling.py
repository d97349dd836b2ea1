"""otlp_sample_ratio: with 0, a request of its own is not traced (its backend still gets a
traceparent, marked not sampled), while a caller's sampled traceparent is followed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.otlp import Receiver

HELLO = [{"role": "user", "content": "hello"}]
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


async def test_ratio_zero_follows_only_sampled_callers(
        receiver: Receiver, gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    c = await gateway_client(telemetry={"access_log": False, "otlp_endpoint": receiver.url,
                                        "otlp_sample_ratio": 0.0})
    alone = await c.post("/v1/chat/completions", json={"model": "demo", "messages": HELLO})
    followed = await c.post("/v1/chat/completions", json={"model": "demo", "messages": HELLO},
                            headers={"traceparent": CALLER})
    assert alone.status_code == followed.status_code == 200
    mine = followed.headers["x-request-id"]
    spans = await asyncio.to_thread(receiver.wait_for, lambda r: [
        s for s in r.spans if s.attributes.get("gatehouse.request_id") == mine])
    assert {s.trace_id for s in spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    server = next(s for s in spans if s.kind == 2)
    assert server.parent_id == "00f067aa0ba902b7" and server.name == "chat demo"
    await asyncio.sleep(1.5)  # a batch later: still nothing of the request of its own
    ids = {s.attributes.get("gatehouse.request_id") for s in receiver.spans}
    assert alone.headers["x-request-id"] not in ids
