"""Backends: where a model's requests go. An HTTP backend speaks OpenAI's API over pooled
keep-alive connections; the demo backend (demo.py) answers in-process.

Lower-library exceptions are translated here, at one boundary, into three kinds the stage acts
on: :class:`ConnectFailed`, :class:`TimedOut` and :class:`Broken`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from gatehouse.config import UpstreamSettings

PATHS = {"chat.completions": "/chat/completions", "completions": "/completions",
         "embeddings": "/embeddings"}


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


class UpstreamReply(Protocol):
    status: int
    content_type: str
    retry_after: str | None

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    first_byte_timeout: float

    async def open(self, call: UpstreamCall) -> UpstreamReply: ...

    async def probe(self) -> str | None: ...

    async def aclose(self) -> None: ...


class _HTTPReply:
    __slots__ = ("_resp", "status", "content_type", "retry_after")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.content_type = resp.headers.get("content-type", "application/json")
        self.retry_after = resp.headers.get("retry-after")

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as exc:
            raise Broken(f"body cut off: {exc!r}") from exc
        except TimeoutError as exc:
            raise TimedOut("timed out reading the body") from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as exc:
            raise Broken(f"stream cut off: {exc!r}") from exc
        except TimeoutError as exc:
            raise TimedOut("stream stalled past the timeout") from exc

    def close(self) -> None:
        # closing (not releasing) drops the connection, so the backend sees the client leave
        # and stops generating; a fully read reply goes back to the pool either way
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class HTTPBackend:
    def __init__(self, name: str, settings: UpstreamSettings, api_key: str | None) -> None:
        self.name = name
        self.settings = settings
        self.first_byte_timeout = settings.first_byte_timeout
        self.base_url = settings.base_url
        self.headers = {"content-type": "application/json", "user-agent": "gatehouse",
                        **settings.headers}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=s.max_connections, ttl_dns_cache=300,
                                               keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=s.total_timeout,
                                              sock_connect=s.connect_timeout,
                                              sock_read=s.first_byte_timeout),
                skip_auto_headers=("user-agent",), auto_decompress=True)
        return self._session

    async def open(self, call: UpstreamCall) -> UpstreamReply:
        headers = {**self.headers, "x-request-id": call.request_id,
                   "accept": "text/event-stream" if call.stream else "application/json"}
        url = self.base_url + PATHS[call.endpoint]
        # a pooled connection the backend closed while idle fails at once; try a fresh one
        for attempt in (1, 2):
            try:
                resp = await self._client().post(url, data=call.body, headers=headers)
                return _HTTPReply(resp)
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise Broken(f"disconnected before answering: {exc!r}") from exc
            except aiohttp.ClientConnectorError as exc:
                raise ConnectFailed(f"cannot connect to {self.base_url}: {exc.os_error!r}") from exc
            except (aiohttp.ClientOSError, aiohttp.ClientResponseError) as exc:
                raise Broken(f"{exc!r}") from exc
            except TimeoutError as exc:
                raise TimedOut("timed out waiting for the answer to start") from exc
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
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
