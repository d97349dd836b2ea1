"""A finished request leaves no reference cycles: otherwise every request feeds the cyclic GC,
whose full collections stall the event loop for tens of milliseconds (p99 latency)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from gatehouse.app import create_app
from gatehouse.context import RequestContext
from gatehouse.edge.protocol import REQUEST_ID
from gatehouse.telemetry.ids import new_request_id
from tests.unit.conftest import make_settings


async def run_request(app: Any, body: bytes, guarded: bool = False) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await never.wait()  # the client stays: only the gateway ends this wait
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"content-type", b"application/json")], "client": ("1.2.3.4", 5)}
    if guarded:  # as the edge protocol hands it over: the request's hook, not a watcher task
        scope[REQUEST_ID] = new_request_id()
    await app(scope, receive, send)
    await asyncio.sleep(0)  # let the cancelled watcher finish
    return sent


@pytest.mark.parametrize("guarded", [False, True], ids=["watcher", "protocol-hook"])
@pytest.mark.parametrize("stream", [False, True])
async def test_requests_leave_no_cyclic_garbage(stream: bool, guarded: bool) -> None:
    app = create_app(make_settings())
    body = (b'{"model":"demo","messages":[{"role":"user","content":"hi"}]'
            + (b',"stream":true}' if stream else b"}"))
    await run_request(app, body)  # warm up: first-use caches are not garbage
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            sent = await run_request(app, body, guarded)
            assert sent[0]["status"] == 200
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, RequestContext)]
        assert not leaked, f"{len(leaked)} request contexts were only freed by the cyclic GC"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        await app.aclose()
