"""Backends: where a model's requests go. An HTTP backend speaks OpenAI's API over pooled
keep-alive connections; the demo backend (demo.py) answers in-process.

Lower-library exceptions are translated here, at one boundary, into three kinds the stage acts
on: :class:`ConnectFailed`, :class:`TimedOut` and :class:`Broken`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict

from gatehouse.config import UpstreamSettings
from gatehouse.telemetry.ids import request_id_as_uuid

PATHS = {"chat.completions": "/chat/completions", "completions": "/completions",
         "embeddings": "/embeddings", "responses": "/responses",
         "moderations": "/moderations", "images.generations": "/images/generations",
         "audio.speech": "/audio/speech", "audio.transcriptions": "/audio/transcriptions",
         "audio.translations": "/audio/translations"}


class BackendFailure(Exception):
    """A backend did not answer usefully; ``detail`` goes to the log, never to the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConnectFailed(BackendFailure):
    pass


class TimedOut(BackendFailure):
    pass


class Broken(BackendFailure):
    """The connection dropped or the answer was cut off."""


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


def translate(exc: BaseException, when: str) -> BackendFailure:
    """The one boundary where aiohttp's exceptions become ours. The detail names the kind of
    failure and never repeats the request (aiohttp's reprs carry its headers: the API key)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectFailed(f"cannot connect to {exc.host}:{exc.port}: "
                             f"{exc.os_error.strerror or type(exc.os_error).__name__}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectFailed("connect timed out")
    if isinstance(exc, TimeoutError):
        return TimedOut(f"timed out {when}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return Broken(f"{type(exc).__name__} {when}: {exc.status} {exc.message}")
    if isinstance(exc, OSError) and exc.strerror:
        return Broken(f"{type(exc).__name__} {when}: {exc.strerror}")
    return Broken(f"{type(exc).__name__} {when}")


# streams whose backend connection is being handed back after [DONE] (kept from the collector)
_SETTLING: set[asyncio.Task[None]] = set()
SETTLE_SECONDS = 2.0


class _HTTPReply:
    __slots__ = ("_resp", "_settling", "content_type", "request_id", "retry_after", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._settling = False
        self.status = resp.status
        headers = resp.headers
        self.content_type = headers.get("content-type", "application/json")
        self.retry_after = headers.get("retry-after")
        # OpenAI, vLLM and llama-cpp-python say x-request-id; Anthropic-style servers
        # request-id; the LiteLLM proxy x-litellm-call-id
        self.request_id = headers.get("x-request-id") or headers.get("request-id") \
            or headers.get("x-litellm-call-id")

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc, "reading the body") from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc, "mid-stream") from exc

    def close(self) -> None:
        # closing (not releasing) drops the connection, so the backend sees the client leave
        # and stops generating; a fully read reply goes back to the pool either way
        if self._settling:
            return  # finish() has it: the connection goes back to the pool, or is closed
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()

    def finish(self) -> None:
        """The answer is complete (a stream's [DONE] went on to the client): give the
        connection back to the pool once the backend ends its body — most send the end with
        [DONE], some linger — without making the client wait; closed if that takes long."""
        if self._resp.content.at_eof():
            self._resp.release()
            return
        self._settling = True
        task = asyncio.get_running_loop().create_task(self._settle())
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)

    async def _settle(self) -> None:
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                for _ in range(64):  # what follows [DONE] is the chunked end, not text
                    if not await self._resp.content.readany():
                        self._resp.release()
                        return
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        self._resp.close()


class HTTPBackend:
    def __init__(self, name: str, settings: UpstreamSettings, api_key: str | None) -> None:
        self.name = name
        self.settings = settings
        self.first_byte_timeout = settings.first_byte_timeout
        self.base_url = settings.base_url
        self.headers = CIMultiDict({"content-type": "application/json",
                                    "user-agent": "gatehouse", **settings.headers})
        # the id goes in the configured header, unless the configured headers set it already
        self._id_header = settings.request_id_header if settings.request_id_header \
            and settings.request_id_header not in self.headers else None
        self._id_as_uuid = settings.request_id_format == "uuid"
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        # built once: aiohttp takes a ready CIMultiDict without converting it per request
        self._json_headers = self.headers.copy()
        self._json_headers["accept"] = "application/json"
        self._sse_headers = self.headers.copy()
        self._sse_headers["accept"] = "text/event-stream"
        self._session: aiohttp.ClientSession | None = None
        # a whole answer arrives only when it is done: bounded by the total timeout; a stream
        # may also not fall silent for longer than the first-byte timeout between chunks
        self._whole_timeout = aiohttp.ClientTimeout(total=settings.total_timeout,
                                                    sock_connect=settings.connect_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=settings.total_timeout,
                                                     sock_connect=settings.connect_timeout,
                                                     sock_read=settings.first_byte_timeout)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=s.max_connections, ttl_dns_cache=300,
                                               keepalive_timeout=30),
                timeout=self._whole_timeout,
                # one session calls the backend for every user: a cookie it sets in answer to
                # one user's request (a load balancer's, a proxy's) must not ride along with
                # everyone's next request, nor pile up here
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("user-agent",), auto_decompress=True)
        return self._session

    async def open(self, call: UpstreamCall) -> UpstreamReply:
        headers = (self._sse_headers if call.stream else self._json_headers).copy()
        if self._id_header is not None:
            headers[self._id_header] = request_id_as_uuid(call.request_id) \
                if self._id_as_uuid else call.request_id
        if call.traceparent is not None:
            headers["traceparent"] = call.traceparent
        if call.content_type is not None:
            headers["content-type"] = call.content_type
        url = self.base_url + (call.path or PATHS[call.endpoint])
        data = call.body if call.method == "POST" else None
        # the session's own timeout is the whole-answer one; streams bring their own
        extra: dict[str, Any] = {"timeout": self._stream_timeout} if call.stream else {}
        # a pooled connection the backend closed while idle fails at once; try a fresh one
        for attempt in (1, 2):
            try:
                resp = await self._client().request(call.method, url, data=data,
                                                    headers=headers, allow_redirects=False,
                                                    **extra)
                return _HTTPReply(resp)
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise translate(exc, "before answering") from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise translate(exc, "before answering") from exc
        raise AssertionError("unreachable")

    async def probe(self) -> str | None:
        """None when the backend answers HTTP at all (any status), else why not."""
        try:
            async with asyncio.timeout(2.0):
                async with self._client().get(self.base_url + "/models",
                                              headers=self.headers) as resp:
                    await resp.read()
                    return None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return translate(exc, "probing").detail

    async def aclose(self) -> None:
        if _SETTLING:  # connections still being handed back: shutting down, just close them
            for task in list(_SETTLING):
                task.cancel()
            await asyncio.gather(*_SETTLING, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
