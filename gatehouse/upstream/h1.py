"""HTTP/1.1 to a backend: a pool of keep-alive connections per backend, httptools' response
parser (llhttp, the parser uvicorn uses for the gateway's own side), a request head built once
per backend, and a reply's body handed on as it arrives.

Why not a general client: a call to a backend is always the same few shapes (a POST of JSON or
a multipart upload, a GET of a stored response, answered with JSON or an event stream), and a
general client's per-request work (URL objects, header multidicts, payload registries, timer
objects, tracing hooks, cookie jars) was a fifth of the gateway's CPU (docs/benchmarks.md,
"The upstream client"). What a general client does that matters here is kept: connection
limits with waiting, keep-alive with idle expiry, a stale pooled connection retried once on a
fresh one, TLS with the system's trust store, gzip/deflate decoding, the connect, total and
read-silence timeouts, bounded heads, a bounded whole answer (received and decoded: a backend
answering without end, or a small gzip body that decodes to gigabytes, costs at most the
bound), decoding a stream a bounded piece at a time, flow control on bodies, and the
connection closed (not reused) whenever an answer was not read to its end, so a backend sees a
caller leave.

Failures are raised as the backend module's three kinds (``ConnectFailed``, ``TimedOut``,
``Broken``), whose details never repeat the request (its headers carry the backend's key).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, urlsplit

import httptools

from gatehouse.upstream.failures import Broken, ConnectFailed, TimedOut, TooLarge
from gatehouse.upstream.heads import check_header, head_lines

__all__ = ["Origin", "Pool", "Response", "abandon", "check_header", "done", "head_lines", "settle"]

MAX_HEAD = 64 * 1024  # bytes of status line and headers an answer may have
MAX_HEADERS = 128
HIGH_WATER = 1 << 17  # a stream's unread bytes past which the backend's socket is not read
DECODED_PIECE = 1 << 20  # a compressed stream is decoded at most this many bytes at a time
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


class Origin:
    """Where a backend is: scheme, host, port, the path its API starts at, the Host header."""

    __slots__ = ("host", "host_header", "path", "port", "ssl")

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {base_url!r} is not an http:// or https:// URL")
        self.host = parts.hostname
        default = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default
        self.ssl = (ssl_context or ssl.create_default_context()) \
            if parts.scheme == "https" else None
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if self.port == default else f"{name}:{self.port}"
        self.path = quote(parts.path.rstrip("/"), safe=_PATH_SAFE)

    def target(self, path: str) -> str:
        """The request target for a path under the API's root: percent-encoded where a
        request line could not carry it (spaces, controls, non-ASCII); escapes kept."""
        return self.path + quote(path, safe=_PATH_SAFE)


class _Decoder:
    """Content-Encoding gzip or deflate (zlib-wrapped, or raw as some servers send it)."""

    __slots__ = ("_raw_tried", "_z")

    def __init__(self, encoding: str) -> None:
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self._raw_tried = encoding == "gzip"

    @property
    def pending(self) -> bool:
        """Input that did not fit the last call's ``most``: the next ``feed`` decodes it."""
        return bool(self._z.unconsumed_tail)

    def feed(self, data: bytes, most: int = 0) -> bytes:
        """``data`` decoded — all of it, or at most ``most`` bytes (then what is left waits in
        :attr:`pending` for the next call, which may pass ``b""``)."""
        tail = self._z.unconsumed_tail
        if tail:
            data = tail + data
        try:
            return self._z.decompress(data, most)
        except zlib.error:
            if self._raw_tried:
                raise Broken("the answer's compressed body is corrupt") from None
            self._raw_tried = True  # deflate without its zlib header
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                return self._z.decompress(data, most)
            except zlib.error:
                raise Broken("the answer's compressed body is corrupt") from None

    def flush(self) -> bytes:
        return self._z.flush()


class Response:
    """One answer on one connection: its head, then its body as it arrives."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_deadline",
        "_decoder",
        "_done",
        "_error",
        "_head_size",
        "_silence",
        "_waiter",
        "abandoned",
        "complete",
        "headers",
        "keep_alive",
        "status",
        "until_close",
    )

    def __init__(self, conn: Connection, silence: float | None) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_size = 0
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._done = False  # the head arrived
        self.complete = False  # the whole message arrived
        self.keep_alive = False
        self.until_close = False
        self.abandoned = False  # its reader left: what still comes is dropped
        self._decoder: _Decoder | None = None
        self._silence = silence
        self._deadline: asyncio.TimerHandle | None = None

    # -- fed by the connection (parser callbacks) --

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(self.headers) >= MAX_HEADERS:
            raise _HeadTooLarge
        key = name.decode("latin-1").lower()
        if key not in self.headers:  # the first of a repeated header, as the readers want
            self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self, status: int, keep_alive: bool) -> bool:
        """False for an interim (1xx) head, which is skipped."""
        if 100 <= status < 200:
            self.headers.clear()
            self._head_size = 0
            return False
        self.status = status
        self.keep_alive = keep_alive
        self.until_close = "content-length" not in self.headers and status not in (204, 304) \
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = _Decoder("gzip" if encoding != "deflate" else "deflate")
        self._done = True
        self._wake()
        return True

    def on_body(self, data: bytes) -> None:
        if self.abandoned:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:  # read again when the reader has taken it
            self._conn.pause()
        self._wake()

    def on_complete(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = exc
        self._wake()

    # -- read by the caller --

    async def _wait(self, when: str) -> None:
        """Until something arrives: more body, the end, an error or the silence bound."""
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._conn.resume()
        silence = None
        if self._silence is not None:
            silence = loop.call_later(self._silence, self._silent, when)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if silence is not None:
                silence.cancel()
        if self._error is not None:
            raise self._error

    def _silent(self, when: str) -> None:
        """The backend sent nothing for the silence bound: the answer is cut off."""
        self.fail(TimedOut(f"timed out {when}"))
        self._conn.close()

    async def head(self) -> None:
        while not self._done:
            await self._wait("before answering")

    def _take(self) -> bytes:
        """The body received and not yet taken, as it came (still encoded)."""
        data = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        return data

    def _too_large(self, limit: int) -> TooLarge:
        self._conn.close()  # what else the backend sends is not read
        return TooLarge(f"answered more than {limit:,} bytes (max_response_bytes)")

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, decoded. With ``limit``, at most that many bytes, received or
        decoded: past it the connection is closed and :class:`TooLarge` raised — a backend
        answering without end, or a small compressed body that decodes to gigabytes, never
        takes more memory than the bound."""
        decoder = self._decoder
        parts: list[bytes] = []
        size = 0
        while True:
            if self._chunks or decoder is not None and decoder.pending:
                data = self._take()
                if decoder is not None:
                    data = decoder.feed(data, 0 if limit is None else limit - size + 1)
                size += len(data)
                parts.append(data)
                if limit is not None and size > limit:
                    raise self._too_large(limit)
                continue
            if self.complete:
                break
            await self._wait("reading the body")
        if decoder is not None:
            tail = decoder.flush()
            if limit is not None and size + len(tail) > limit:
                raise self._too_large(limit)
            parts.append(tail)
        return b"".join(parts)  # (one part: that part itself, not a copy)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, decoded; a compressed body at most ``DECODED_PIECE`` bytes
        at a time, whatever a piece of it decodes to."""
        decoder = self._decoder
        while True:
            if self._chunks or decoder is not None and decoder.pending:
                data = self._take()
                if decoder is not None:
                    data = decoder.feed(data, DECODED_PIECE)
                if data:
                    yield data
                continue
            if self.complete:
                if decoder is not None and (tail := decoder.flush()):
                    yield tail
                return
            await self._wait("mid-stream")

    def at_eof(self) -> bool:
        return self.complete and not self._chunks


class _HeadTooLarge(Exception):
    pass


class Connection(asyncio.Protocol):
    """One keep-alive connection; answers one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.answered = 0  # answers read on it before (a pooled connection: may be stale)
        self.idle_since = 0.0
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None:  # bytes nobody asked for: the connection is no longer usable
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            resp.fail(Broken("answered with a protocol switch"))
            self.close()
        except httptools.HttpParserError as exc:  # a callback's error comes as its context
            resp.fail(Broken("answered with a head over 64 KiB or 128 headers"
                             if isinstance(exc.__context__, _HeadTooLarge) else
                             f"answered malformed HTTP ({exc})"))
            self.close()

    def eof_received(self) -> bool:
        self.closed = True  # not to be handed out again while the close goes through
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = exc
        self.pool.forget(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        resp = self.response
        if resp is not None and not resp.complete:
            if resp._done and resp.until_close and exc is None:
                resp.on_complete()  # an answer without a length or chunks ends at the close
            else:
                why = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
                resp.fail(_Disconnected(f"connection closed {'mid-answer' if resp._done else 'before answering'}{why}"))

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.on_header(name, value)

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.on_headers_complete(self.parser.get_status_code(),
                                          self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.on_body(body)

    def on_message_complete(self) -> None:
        resp = self.response
        assert resp is not None
        if not resp._done:  # the end of an interim (1xx) answer
            return
        resp.on_complete()
        if resp.abandoned:  # its reader gave the connection back before this end came
            done(resp)

    # -- used by the pool and the reply --

    async def send(self, data: bytes, body: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if transport.is_closing():  # closed by the backend, its connection_lost not yet run
            self.closed = True
            raise _Disconnected("connection closed before sending")
        try:
            if len(body) <= 65536:
                transport.write(data + body)
            else:
                transport.write(data)
                transport.write(body)
        except (OSError, RuntimeError) as exc:  # uvloop: "unable to perform operation"
            self.close()
            raise _Disconnected(f"connection closed while sending ({type(exc).__name__})") \
                from None
        if self._drain is not None and not self._drain.done():
            await self._drain
        if self.closed and self.response is not None and not self.response.complete:
            raise _Disconnected("connection closed while sending")

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool.forget(self)


class _NoSlot(Exception):
    pass


def _why(exc: OSError) -> str:
    """An OSError in words: "Connection refused", not asyncio's "Connect call failed (…)"."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "the name does not resolve"
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _give_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_NoSlot())


class _Disconnected(Broken):
    """The backend closed the connection; on a pooled connection before any answer, retried."""


class Pool:
    """Keep-alive connections to one origin, at most ``limit`` open at once; a caller past the
    limit waits for one (first come, first served)."""

    def __init__(self, origin: Origin, limit: int, connect_timeout: float,
                 keepalive: float = 30.0) -> None:
        self.origin = origin
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self.connects = 0  # connections made, for tests and the curious

    async def acquire(self, wait: float) -> Connection:
        now = time.monotonic()
        while True:
            while self._idle:
                conn = self._idle.pop()
                if conn.closed:
                    continue
                if conn.transport is None or conn.transport.is_closing():
                    conn.close()
                    continue
                if now - conn.idle_since > self.keepalive:
                    conn.close()
                    continue
                return conn
            if len(self._open) + self._connecting < self.limit:
                return await self._connect()
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            bound = loop.call_later(wait, _give_up, waiter)
            try:
                await waiter
            except _NoSlot:
                raise TimedOut(f"timed out waiting for one of the {self.limit} connections "
                               f"(max_connections)") from None
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake_one()  # it was woken for a slot it will not take: pass it on
                raise
            finally:
                bound.cancel()

    async def _connect(self) -> Connection:
        o = self.origin
        loop = asyncio.get_running_loop()
        self._connecting += 1
        conn: Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self), o.host, o.port, ssl=o.ssl,
                    server_hostname=o.host if o.ssl is not None else None)
        except TimeoutError:
            raise ConnectFailed("connect timed out") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"cannot connect to {o.host}:{o.port}: TLS: "
                                f"{exc.reason or type(exc).__name__}") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {o.host}:{o.port}: {_why(exc)}") from None
        finally:
            self._connecting -= 1
            if conn is None:  # failed or cancelled: the slot it held is free again
                self._wake_one()
        self.connects += 1
        self._open.add(conn)
        return conn

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def release(self, conn: Connection) -> None:
        """A connection whose answer was read to its end (reused if both ends agree), or one
        whose answer was not (closed)."""
        resp = conn.response
        conn.response = None
        if conn.closed or resp is None or not resp.complete or not resp.keep_alive:
            conn.close()  # (its slot's waiter is woken as the pool forgets it)
            return
        conn.answered += 1
        conn.idle_since = time.monotonic()
        conn.resume()  # (paused if its answer's end came with a full buffer) to see a close
        if self._waiters:
            self._idle.append(conn)
            self._wake_one()
            return
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive, self._expire)

    def _expire(self) -> None:
        self._sweep = None
        now = time.monotonic()
        keep = []
        for conn in self._idle:
            if conn.closed:
                continue
            if now - conn.idle_since >= self.keepalive:
                conn.close()
            else:
                keep.append(conn)
        self._idle[:] = keep
        if keep:
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive, self._expire)

    def forget(self, conn: Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._wake_one()

    async def request(self, head: bytes, body: bytes, *, total: float,
                      silence: float | None, on_reply: Callable[[Response], None] | None = None
                      ) -> Response:
        """Send a request and wait for its answer's head. A pooled connection the backend
        closed while idle (before any byte of an answer) is retried once on a fresh one."""
        for attempt in (1, 2):
            conn = await self.acquire(total)
            reused = conn.answered > 0
            resp = Response(conn, silence)
            conn.response = resp
            resp._deadline = asyncio.get_running_loop().call_later(total, _expired, resp, conn)
            try:
                await conn.send(head, body)
                await resp.head()
                return resp
            except _Disconnected:
                abandon(resp)
                if not reused or attempt == 2 or resp._done:
                    raise
            except BaseException:
                abandon(resp)
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for w in self._waiters:
            if not w.done():
                w.cancel()
        self._waiters.clear()


def _expired(resp: Response, conn: Connection) -> None:
    """The total timeout: the answer is cut off and its connection closed."""
    if not resp.complete:
        resp.fail(TimedOut("timed out " + ("reading the body" if resp._done
                                           else "before answering")))
        conn.close()


def done(resp: Response) -> None:
    """The answer was read to its end: its connection back to the pool."""
    if resp._deadline is not None:
        resp._deadline.cancel()
    conn = resp._conn
    if conn.response is resp:
        conn.pool.release(conn)


def abandon(resp: Response) -> None:
    """The answer is not wanted any more: its connection closed (so the backend stops)."""
    if resp._deadline is not None:
        resp._deadline.cancel()
    resp.abandoned = True
    conn = resp._conn
    if conn.response is resp:
        conn.close()
        conn.pool.release(conn)


def settle(resp: Response, seconds: float) -> None:
    """The reader has all it wants (a stream's [DONE]): the connection goes back to the pool
    when the backend ends the answer, or is closed if that takes longer than ``seconds``."""
    if resp.complete:
        done(resp)
        return
    resp.abandoned = True
    resp._chunks.clear()
    resp._conn.resume()
    if resp._deadline is not None:
        resp._deadline.cancel()
    resp._deadline = asyncio.get_running_loop().call_later(seconds, _settle_expired, resp)


def _settle_expired(resp: Response) -> None:
    if not resp.complete:  # the backend did not end it in time: closed, as any left answer
        abandon(resp)
