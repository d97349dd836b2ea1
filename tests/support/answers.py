"""A tiny HTTP/1.1 server that gives one class of answer and counts the attempts it saw.

    python -m tests.support.answers --port 9010

The path chooses the answer: ``/{answer}/{times}/v1/...`` answers ``answer`` to the first
``times`` attempts of each ``X-Client-Request-Id`` (``all``: every attempt), then 200. Errors
are the gateway's own (``gatehouse.errors`` rendered as the gateway renders them); ``reset``
drops the connection with a TCP RST, ``stall`` holds the answer for 30 s.

    GET  /_attempts     {"total": n, "by_id": {client request id: n}}
    POST /_reset        counters back to zero

Raw asyncio rather than a framework: a reset connection is just a closed socket.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from gatehouse import errors
from tests.support.procs import _wait_http as wait_http
from tests.support.procs import free_port, stop

Reply = tuple[int, dict[str, str], bytes]


def error(e: errors.GatehouseError) -> Reply:
    return e.status, {"content-type": "application/json", "x-request-id": "req_answers",
                      **e.response_headers()}, e.body("req_answers")


def plain(status: int, **headers: str) -> Callable[[], Reply]:
    def reply() -> Reply:
        body = orjson.dumps({"error": {"message": f"answering {status} on purpose",
                                       "type": "server_error", "param": None, "code": None}})
        return status, {"content-type": "application/json", "x-request-id": "req_answers",
                        **{k.replace("_", "-"): v for k, v in headers.items()}}, body
    return reply


ANSWERS: dict[str, Callable[[], Reply]] = {
    "500": plain(500), "502": plain(502), "504": plain(504), "501": plain(501),
    "at_capacity": lambda: error(errors.AtCapacity("busy", retry_after=2)),
    "at_capacity_long": lambda: error(errors.AtCapacity("busy", retry_after=600)),
    "upstream_unavailable": lambda: error(errors.UpstreamUnavailable("down")),
    "rate": lambda: error(errors.RateLimited("slow down", retry_after=1.5)),
    "rate_long": lambda: error(errors.RateLimited("slow down", retry_after=3600)),
    "rate_bare": lambda: error(errors.RateLimited("slow down")),
    "quota": lambda: error(errors.QuotaExceeded("spent", headers={"x-should-retry": "false"})),
    # no x-should-retry, and a Retry-After: the code alone must stop the retry
    "quota_bare": lambda: error(errors.QuotaExceeded("spent", retry_after=1)),
    "400": lambda: error(errors.InvalidRequest("bad")),
    "401": lambda: error(errors.InvalidApiKey("bad key")),
    "1020": lambda: error(errors.AccessDenied("denied", ray_id="8f00ba11")),
    "challenge": lambda: error(errors.ChallengeRequired("check", ray_id="8f00ba12")),
    "404": lambda: error(errors.ModelNotFound("no model")),
    "409": lambda: error(errors.Conflict("exists")),
    "413": lambda: error(errors.RequestTooLarge("big")),
    "422": plain(422),
    "400_should_retry": plain(400, x_should_retry="true"),
    "500_should_not": plain(500, x_should_retry="false"),
    "quota_should_retry": lambda: error(errors.QuotaExceeded(
        "spent", headers={"x-should-retry": "true"})),
}
OK = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "fine"}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


class AnswerServer:
    def __init__(self) -> None:
        self.by_id: Counter[str] = Counter()
        self.total = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                reply = await self.answer(method, path, headers.get("x-client-request-id", ""))
                if reply is None:  # reset: RST instead of an answer
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                status, extra, body = reply
                out = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}",
                       *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str, client_id: str) -> Reply | None:
        if path == "/_attempts":
            return 200, {}, orjson.dumps({"total": self.total, "by_id": self.by_id})
        if path == "/_reset":
            self.by_id.clear()
            self.total = 0
            return 200, {}, b"{}"
        self.total += 1
        self.by_id[client_id] += 1
        name, times, _ = (path.strip("/").split("/", 2) + ["", ""])[:3]
        if name == "ok" or (times != "all" and self.by_id[client_id] > int(times or 0)):
            return 200, {"content-type": "application/json", "x-request-id": "req_ok"}, OK
        if name == "reset":
            return None
        if name == "stall":
            await asyncio.sleep(30)
            return 200, {}, OK
        return ANSWERS[name]()


async def serve(port: int) -> None:
    server = await asyncio.start_server(AnswerServer().handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


class Answers:
    """The answer server in its own process, for the e2e tests."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"answers-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.answers", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT)
        wait_http(self.url + "/_attempts", self.proc, self.log)

    def reset(self) -> None:
        httpx.post(self.url + "/_reset").raise_for_status()

    def attempts(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/_attempts").json()
        return data

    def stop(self) -> None:
        stop(self.proc)
