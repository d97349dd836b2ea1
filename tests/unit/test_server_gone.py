"""A client that leaves mid-answer is heard from the connection itself: the edge protocol calls
the request's hook (edge/protocol.py ON_GONE), so no task per request waits on receive() for
the disconnect — the request is still cancelled at once, and its slot freed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from gatehouse.app import create_app
from gatehouse.edge.protocol import GuardedHttpProtocol
from tests.unit.conftest import make_settings


def request_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks()
            if t.get_coro().__qualname__ == "RequestResponseCycle.run_asgi"]  # type: ignore[union-attr]


def watchers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks()
            if t.get_coro().__qualname__ == "Gateway._watch"]  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[int]:
    """``app`` served by uvicorn with the edge protocol on 127.0.0.1; yields the port."""
    # as `gatehouse serve` runs it (no proxy-headers middleware: the protocol finds the app's
    # connection registry, and with it its limits and metrics)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on",
                                           http=GuardedHttpProtocol, log_level="warning",
                                           proxy_headers=False))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


async def test_leaving_mid_stream_cancels_the_request_without_a_watcher_task(
        tmp_path: Path) -> None:
    # a 20-s answer (400 tokens, 50 ms each) and one request at a time for everyone
    app = create_app(make_settings(tmp_path, demo={"ms_per_token": 50, "reply_tokens": 400,
                                                   "max_concurrency": 1}))
    async with served(app) as port:
        body = orjson.dumps({"model": "demo", "stream": True, "max_tokens": 300,
                             "messages": [{"role": "user", "content": "hello"}]})
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        answer = await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        assert answer.startswith(b"HTTP/1.1 200")
        (running,) = request_tasks()
        assert watchers() == []  # the protocol tells the request; nothing waits on receive()

        writer.close()  # the client leaves 19 s before the answer's end
        left = time.monotonic()
        await asyncio.wait_for(asyncio.shield(running), 5)
        assert not running.cancelled()  # the gateway's own cancel, absorbed: exits ran
        gone_in = time.monotonic() - left

        # its admission slot is free: the next request is answered, not queued behind it
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        short = orjson.dumps({"model": "demo", "max_tokens": 2,
                              "messages": [{"role": "user", "content": "hi"}]})
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: "
                     b"application/json\r\ncontent-length: %d\r\n\r\n" % len(short) + short)
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 200"), status
        writer.close()
        assert gone_in < 5


class Slow:
    """A GET route's stage that takes a minute: the request is cancelled only if the gateway
    hears the client leave."""
    name = "slow"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.left = asyncio.Event()

    async def enter(self, ctx: Any) -> None:
        self.entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.left.set()
            raise

    async def exit(self, ctx: Any, outcome: Any) -> None:
        pass


async def test_leaving_a_get_whose_body_nobody_reads_is_heard(tmp_path: Path) -> None:
    """A body on a GET is read by no stage. Beyond 64 KiB uvicorn stops reading the socket
    until the app reads it — so the client's leaving was never heard and the request (a
    stored response's stream, say) ran on to its end. The body is read away instead."""
    from gatehouse.pipeline import Pipeline
    from gatehouse.server import Route

    app = create_app(make_settings(tmp_path))
    slow = Slow()
    app.routes["/v1/slow"] = Route("GET", Pipeline([slow]), "slow")
    async with served(app) as port:
        for head in (b"content-length: %d\r\n" % (256 * 1024),
                     b"transfer-encoding: chunked\r\n"):
            chunked = head.startswith(b"transfer")
            body = b"x" * (256 * 1024)
            if chunked:
                body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
            slow.entered.clear()
            slow.left.clear()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/slow HTTP/1.1\r\nhost: gw\r\n" + head + b"\r\n" + body)
            await asyncio.wait_for(slow.entered.wait(), 10)
            await asyncio.sleep(0.2)  # the body is in, as far as the server reads it
            writer.close()
            await asyncio.wait_for(slow.left.wait(), 5)  # heard: the stage was cancelled
