"""Backends: where a model's requests go. An HTTP backend speaks OpenAI's API over pooled
keep-alive connections (h1.py); the demo backend (demo.py) answers in-process.

Failures are raised as three kinds the stage acts on (failures.py): :class:`ConnectFailed`,
:class:`TimedOut` and :class:`Broken`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gatehouse.config import UpstreamSettings
from gatehouse.telemetry.ids import request_id_as_uuid
from gatehouse.upstream import h1
from gatehouse.upstream.failures import BackendFailure, Broken, ConnectFailed, TimedOut

__all__ = ["PATHS", "Backend", "BackendFailure", "Broken", "ConnectFailed", "HTTPBackend",
           "TimedOut", "UpstreamCall", "UpstreamReply"]

PATHS = {"chat.completions": "/chat/completions", "completions": "/completions",
         "embeddings": "/embeddings", "responses": "/responses",
         "moderations": "/moderations", "images.generations": "/images/generations",
         "audio.speech": "/audio/speech", "audio.transcriptions": "/audio/transcriptions",
         "audio.translations": "/audio/translations"}


@dataclass(slots=True)
class UpstreamCall:
    endpoint: str
    body: bytes
    stream: bool
    request_id: str
    traceparent: str | None = None  # W3C trace context of the call's span (OTLP export on)
    method: str = "POST"
    path: str | None = None  # instead of the endpoint's path (a stored response's)
    content_type: str | None = None  # instead of JSON (a multipart upload)


class UpstreamReply(Protocol):
    status: int
    content_type: str
    retry_after: str | None
    request_id: str | None  # the backend's own id for this call, when it sends one

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...

    def finish(self) -> None:
        """Like close(), for an answer passed on in full (the connection may be reused)."""
        ...


class Backend(Protocol):
    name: str
    first_byte_timeout: float

    async def open(self, call: UpstreamCall) -> UpstreamReply: ...

    async def probe(self) -> str | None: ...

    async def aclose(self) -> None: ...


SETTLE_SECONDS = 2.0  # a stream's backend may take this long to end its body after [DONE]


class _HTTPReply:
    __slots__ = ("_limit", "_resp", "content_type", "request_id", "retry_after", "status")

    def __init__(self, resp: h1.Response, limit: int) -> None:
        self._resp = resp
        self._limit = limit  # of a whole answer's bytes ([upstream] max_response_bytes)
        self.status = resp.status
        headers = resp.headers
        self.content_type = headers.get("content-type", "application/json")
        self.retry_after = headers.get("retry-after")
        # OpenAI, vLLM and llama-cpp-python say x-request-id; Anthropic-style servers
        # request-id; the LiteLLM proxy x-litellm-call-id
        self.request_id = headers.get("x-request-id") or headers.get("request-id") \
            or headers.get("x-litellm-call-id")

    async def read(self) -> bytes:
        return await self._resp.read(self._limit)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.chunks()

    def close(self) -> None:
        # a reply read to its end goes back to the pool; otherwise its connection is closed,
        # so the backend sees the client leave and stops generating
        if self._resp.at_eof():
            h1.done(self._resp)
        else:
            h1.abandon(self._resp)

    def finish(self) -> None:
        """The answer is complete (a stream's [DONE] went on to the client): give the
        connection back to the pool once the backend ends its body — most send the end with
        [DONE], some linger — without making the client wait; closed if that takes long."""
        h1.settle(self._resp, SETTLE_SECONDS)


class HTTPBackend:
    def __init__(self, name: str, settings: UpstreamSettings, api_key: str | None) -> None:
        self.name = name
        self.settings = settings
        self.first_byte_timeout = settings.first_byte_timeout
        self.base_url = settings.base_url
        self.origin = h1.Origin(settings.base_url)
        # later names win, whatever their case: a configured Content-Type replaces ours
        headers = {"host": self.origin.host_header, "content-type": "application/json",
                   "user-agent": "gatehouse", "accept-encoding": "gzip, deflate"}
        headers.update({k.lower(): v for k, v in settings.headers.items()})
        # the id goes in the configured header, unless the configured headers set it already
        self._id_header = settings.request_id_header.lower() if settings.request_id_header \
            and settings.request_id_header.lower() not in headers else None
        self._id_as_uuid = settings.request_id_format == "uuid"
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        for k, v in headers.items():
            h1.check_header(k, v)
        self.headers = headers
        # the head's header lines built once; a call adds its request line, its id, its trace
        # context and its length
        self._json_lines = h1.head_lines({**headers, "accept": "application/json"})
        self._sse_lines = h1.head_lines({**headers, "accept": "text/event-stream"})
        self._pool: h1.Pool | None = None

    def _client(self) -> h1.Pool:
        if self._pool is None:
            s = self.settings
            self._pool = h1.Pool(self.origin, s.max_connections, s.connect_timeout)
        return self._pool

    def _head(self, call: UpstreamCall) -> bytes:
        method = call.method
        if call.content_type is not None or \
                (call.traceparent is not None and "traceparent" in self.headers):
            extra = dict(self.headers)
            extra["accept"] = "text/event-stream" if call.stream else "application/json"
            lines = b""
        else:
            extra = {}
            lines = self._sse_lines if call.stream else self._json_lines
        # the gateway's own values (its request id, a traceparent formatted from numbers)
        # need no check; the client's content type does
        if self._id_header is not None:
            extra[self._id_header] = request_id_as_uuid(call.request_id) \
                if self._id_as_uuid else call.request_id
        if call.traceparent is not None:
            extra["traceparent"] = call.traceparent
        if call.content_type is not None:  # a multipart upload's
            h1.check_header("content-type", call.content_type)
            extra["content-type"] = call.content_type
        if method == "POST":
            extra["content-length"] = str(len(call.body))
        return self._request(method, call.path or PATHS[call.endpoint],
                             lines + h1.head_lines(extra))

    def _request(self, method: str, path: str, lines: bytes) -> bytes:
        """A request head: its line (the path under the backend's root) and header lines."""
        return b"".join((f"{method} {self.origin.target(path)} HTTP/1.1\r\n".encode("ascii"),
                         lines, b"\r\n"))

    async def open(self, call: UpstreamCall) -> UpstreamReply:
        try:
            head = self._head(call)
        except ValueError as exc:  # a client's value that cannot go in a head
            raise Broken(f"the request cannot be sent: {exc}") from None
        s = self.settings
        # a whole answer arrives only when it is done: bounded by the total timeout; a stream
        # may also not fall silent for longer than the first-byte timeout between chunks
        resp = await self._client().request(
            head, call.body if call.method == "POST" else b"", total=s.total_timeout,
            silence=s.first_byte_timeout if call.stream else None)
        return _HTTPReply(resp, s.max_response_bytes)

    async def probe(self) -> str | None:
        """None when the backend answers HTTP at all (any status), else why not."""
        head = self._request("GET", "/models", self._json_lines)
        try:
            reply = _HTTPReply(await self._client().request(head, b"", total=2.0, silence=None),
                               self.settings.max_response_bytes)
            try:
                await reply.read()
            finally:
                reply.close()  # back to the pool when read; closed when the read failed
            return None
        except BackendFailure as exc:
            return exc.detail

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
