"""An upgrade request (WebSocket, h2c) is answered as plain HTTP and its connection closed after
(gatehouse/edge/protocol.py): what the client sends after the head is not HTTP, and is not
read as HTTP — whether it came in the head's segment or in a later one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn

from gatehouse.edge.protocol import GuardedHttpProtocol

UPGRADE = b"Host: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
H2C = b"Host: gw\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n" \
      b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 "ok" a moment after the request came (as an answer that waits on a store or
    on a backend would)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await asyncio.sleep(0.3)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = uvicorn.Server(uvicorn.Config(slow_app, host="127.0.0.1", port=0, lifespan="on",
                                           ws="none", http=GuardedHttpProtocol,
                                           log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


@pytest.mark.parametrize(("head", "after"), [
    (b"GET /x HTTP/1.1\r\n" + UPGRADE + b"\r\n", b"\x81\x85abcdhello"),  # a WebSocket frame
    (b"GET /x HTTP/1.1\r\n" + UPGRADE + b"\r\n", b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n"),
    (b"GET /x HTTP/1.1\r\n" + H2C + b"\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
], ids=["frame", "pipelined", "h2c-preface"])
async def test_what_follows_an_upgrade_head_later_is_not_read_as_http(
        port: int, head: bytes, after: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.1)  # the rest in a later segment, while the answer is made
        writer.write(after)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()
    # the request's own answer, then the connection closed — not a 400 "not valid HTTP" for
    # the bytes after the head, written in its place
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"connection: close" in answer.lower() and answer.endswith(b"\r\n\r\nok")


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n\r\nhel",
                                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel"],
                         ids=["content-length", "chunked"])
async def test_an_upgrade_with_a_body_is_refused_saying_why(port: int, framing: bytes) -> None:
    """h2c sends a request's body whole before HTTP/2 (RFC 7540 3.2), but the parser stops at an
    upgrade's head: the body cannot be read, so the request is refused with a reason (it reached
    the app with an empty body: "The request body is empty", which was not the problem)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /x HTTP/1.1\r\n" + H2C + framing)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"lo\r\n0\r\n\r\n" if b"chunked" in framing else b"lo")
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"connection: close" in head.lower() and b"x-request-id: req_" in head.lower()
    error = orjson.loads(body)["error"]
    assert error["code"] == "upgrade_not_supported" and "Upgrade header" in error["message"]


async def test_what_follows_an_upgrade_head_is_dropped_only_up_to_a_bound(port: int) -> None:
    """While the upgrade's answer is made, what the client sends is dropped, not read — and
    not for ever: past the head limit the connection is cut (it was read away without end,
    as fast as the client sent, for as long as the answer took)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        writer.write(b"GET /x HTTP/1.1\r\n" + UPGRADE + b"\r\n")
        async with asyncio.timeout(5):
            while sent < 64 * 1024 * 1024:
                writer.write(b"\x82\x7f" + b"\0" * 65534)  # binary frames, without a 101
                await writer.drain()
                sent += 65536
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    assert sent < 16 * 1024 * 1024, sent
