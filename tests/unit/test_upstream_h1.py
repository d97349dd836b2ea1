"""The backend client (gatehouse/upstream/h1.py) against real sockets on 127.0.0.1: servers
that answer with exactly the bytes each test gives, so the odd answers real backends send
(chunked, compressed, no length, interim heads, closed while idle, too-large heads, silence)
are each met once."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

import pytest

from gatehouse.config import UpstreamSettings
from gatehouse.upstream import h1
from gatehouse.upstream.backend import HTTPBackend, UpstreamCall
from gatehouse.upstream.failures import Broken, ConnectFailed, TimedOut

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = b'{"ok":true}'


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


def answer(body: bytes = JSON, *, status: str = "200 OK", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{headers}\r\n").encode() + body


class Server:
    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl = ssl_context
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def pool_for(server: Server, limit: int = 8, ctx: ssl.SSLContext | None = None) -> h1.Pool:
    return h1.Pool(h1.Origin(server.url, ctx), limit, connect_timeout=2.0)


def head(path: str = "/v1/chat/completions", body: bytes = b"{}") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n").encode()


async def call(pool: h1.Pool, *, total: float = 5.0, silence: float | None = None,
               body: bytes = b"{}") -> bytes:
    resp = await pool.request(head(body=body), body, total=total, silence=silence)
    data = await resp.read()
    h1.done(resp)
    return data


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()


async def test_keep_alive_one_connection_for_many_calls() -> None:
    async with Server(keep_answering) as srv:
        pool = pool_for(srv)
        for _ in range(5):
            assert await call(pool) == JSON
        assert (srv.connections, pool.connects) == (1, 1)
        pool.close()


async def test_chunked_and_compressed_bodies_are_decoded() -> None:
    payload = b'{"text":"' + b"word " * 2000 + b'"}'
    packed = gzip.compress(payload)

    async def chunked_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(packed), 100):
            part = packed[i:i + 100]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        # deflate, as some servers send it: without the zlib wrapper
        await read_request(reader)
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = raw.compress(payload) + raw.flush()
        writer.write(answer(body, headers="content-encoding: deflate\r\n"))
        await writer.drain()
        await reader.read()

    async with Server(chunked_gzip) as srv:
        pool = pool_for(srv)
        assert await call(pool) == payload
        assert await call(pool) == payload
        assert srv.connections == 1
        pool.close()


async def test_an_answer_without_a_length_ends_at_the_close_and_is_not_reused() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/html\r\n\r\n<html>hi</html>")
        await writer.drain()

    async with Server(http10) as srv:
        pool = pool_for(srv)
        assert await call(pool) == b"<html>hi</html>"
        assert await call(pool) == b"<html>hi</html>"
        assert srv.connections == 2
        pool.close()


async def test_a_pooled_connection_closed_while_idle_is_retried_on_a_fresh_one() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())  # says keep-alive, then closes as soon as it is idle
        await writer.drain()
        await asyncio.sleep(0.05)

    async with Server(one_then_close) as srv:
        pool = pool_for(srv)
        assert await call(pool) == JSON
        await asyncio.sleep(0.2)
        assert await call(pool) == JSON
        assert srv.connections == 2
        pool.close()


async def test_a_stale_connection_that_closes_as_it_is_used_is_retried() -> None:
    served = 0

    async def close_on_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        await read_request(reader)
        writer.write(answer())
        await writer.drain()
        if served == 1:  # the next request on this connection gets no answer: a close
            await read_request(reader)
            writer.transport.abort()
            return
        await reader.read()

    async with Server(close_on_second) as srv:
        pool = pool_for(srv)
        assert await call(pool) == JSON
        assert await call(pool) == JSON  # retried once on a fresh connection
        assert srv.connections == 2
        pool.close()


async def test_a_fresh_connection_closed_before_answering_is_broken_not_retried() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with Server(hang_up) as srv:
        pool = pool_for(srv)
        with pytest.raises(Broken, match="connection closed before answering"):
            await call(pool)
        assert srv.connections == 1
        pool.close()


async def test_an_answer_cut_off_mid_body_is_broken() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()

    async with Server(short) as srv:
        pool = pool_for(srv)
        with pytest.raises(Broken, match="connection closed mid-answer"):
            await call(pool)
        pool.close()


@pytest.mark.parametrize("reply, why", [
    (answer(b"not gzip at all", headers="content-encoding: gzip\r\n"),
     "compressed body is corrupt"),
    (b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * 70_000 + b"\r\n\r\n",
     "head over 64 KiB or 128 headers"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: 1\r\n" % i for i in range(200)) + b"\r\n",
     "head over 64 KiB or 128 headers"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed HTTP"),
    (b"HTTP/1.1 abc OK\r\n\r\n", "malformed HTTP"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n", "malformed HTTP"),
])
async def test_answers_that_are_not_usable_http_are_broken(reply: bytes, why: str) -> None:
    async def odd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await reader.read()

    async with Server(odd) as srv:
        pool = pool_for(srv)
        with pytest.raises(Broken, match=why):
            await call(pool)
        pool.close()


async def test_interim_heads_are_skipped() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + answer())
        await writer.drain()
        await reader.read()

    async with Server(early_hints) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=5.0, silence=None)
        assert resp.status == 200 and "link" not in resp.headers
        assert await resp.read() == JSON
        pool.close()


async def test_the_total_timeout_bounds_a_silent_backend_and_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client closes
        closed.set()

    async with Server(silent) as srv:
        pool = pool_for(srv)
        with pytest.raises(TimedOut, match="timed out before answering"):
            await call(pool, total=0.3)
        await asyncio.wait_for(closed.wait(), 5)
        pool.close()


async def test_a_stream_that_falls_silent_times_out_mid_stream() -> None:
    async def one_event(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        event = b'data: {"x":1}\n\n'
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        await writer.drain()
        await reader.read()

    async with Server(one_event) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=30.0, silence=0.3)
        chunks = resp.chunks()
        assert await anext(chunks) == b'data: {"x":1}\n\n'
        with pytest.raises(TimedOut, match="timed out mid-stream"):
            await anext(chunks)
        pool.close()


async def test_past_the_limit_callers_wait_their_turn_and_the_wait_is_bounded() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(answer())
            await writer.drain()

    async with Server(slow) as srv:
        pool = pool_for(srv, limit=1)
        first = asyncio.create_task(call(pool))
        second = asyncio.create_task(call(pool))
        await asyncio.sleep(0.2)
        with pytest.raises(TimedOut, match="waiting for one of the 1 connections"):
            await call(pool, total=0.2)
        release.set()
        assert await first == JSON and await second == JSON
        assert srv.connections == 1
        pool.close()


async def test_a_cancelled_wait_passes_its_turn_on() -> None:
    async with Server(keep_answering) as srv:
        pool = pool_for(srv, limit=1)
        conn = await pool.acquire(5.0)
        waiting = asyncio.create_task(pool.acquire(5.0))
        behind = asyncio.create_task(call(pool))
        await asyncio.sleep(0.05)
        waiting.cancel()
        conn.response = None
        conn.close()  # the slot comes free; the cancelled waiter must not keep it
        assert await asyncio.wait_for(behind, 5) == JSON
        pool.close()


async def test_a_caller_leaving_mid_stream_closes_the_connection() -> None:
    gone = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b"5\r\nhello\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            gone.set()
        if reader.at_eof() or await reader.read() == b"":
            gone.set()

    async with Server(endless) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=30.0, silence=5.0)
        assert await anext(resp.chunks())
        h1.abandon(resp)
        await asyncio.wait_for(gone.wait(), 5)
        assert pool.connects == 1 and not pool._open
        pool.close()


@pytest.mark.parametrize("end_after, reused", [(0.1, True), (3.0, False)])
async def test_a_finished_stream_goes_back_to_the_pool_when_its_end_comes_soon(
        end_after: float, reused: bool) -> None:
    async def lingering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if srv.connections > 1:
            await keep_answering(reader, writer)
            return
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"e\r\ndata: [DONE]\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(end_after)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await keep_answering(reader, writer)

    async with Server(lingering) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=30.0, silence=5.0)
        assert await anext(resp.chunks()) == b"data: [DONE]\n\n"
        h1.settle(resp, 2.0)
        await asyncio.sleep(end_after + 0.5 if reused else 2.5)
        assert await call(pool) == JSON
        assert (srv.connections == 1) is reused
        pool.close()


async def test_a_stream_not_read_is_not_buffered_without_bound() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        part = b"x" * 65536
        for _ in range(20 * 16):  # 20 MiB
            writer.write(b"10000\r\n" + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with Server(flood) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=30.0, silence=5.0)
        await asyncio.sleep(1.0)  # nobody reads
        assert resp._buffered <= h1.HIGH_WATER + 4 * 65536
        total = 0
        async for chunk in resp.chunks():
            total += len(chunk)
        assert total == 20 * 1024 * 1024
        h1.done(resp)
        pool.close()


async def test_a_large_upload_is_sent_whole() -> None:
    got: list[int] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        got.append(len(body))
        writer.write(answer())
        await writer.drain()
        await reader.read()

    async with Server(sink) as srv:
        pool = pool_for(srv)
        body = b"y" * (8 * 1024 * 1024)
        assert await call(pool, body=body) == JSON
        assert got == [len(body)]
        pool.close()


async def test_connect_refused_names_the_address() -> None:
    async with Server(keep_answering) as srv:
        url = srv.url
    pool = h1.Pool(h1.Origin(url), 4, connect_timeout=2.0)
    port = url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(ConnectFailed, match=f"cannot connect to 127.0.0.1:{port}: "
                                            "Connection refused"):
        await call(pool)


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


async def test_tls_backends_are_verified(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    async with Server(keep_answering, server_ctx) as srv:
        pool = pool_for(srv, ctx=client_ctx)
        assert await call(pool) == JSON
        assert await call(pool) == JSON
        assert srv.connections == 1
        pool.close()
        untrusting = h1.Pool(h1.Origin(srv.url), 4, connect_timeout=2.0)  # the system's CAs
        with pytest.raises(ConnectFailed, match="TLS: CERTIFICATE_VERIFY_FAILED"):
            await call(untrusting)
        untrusting.close()


async def test_the_backends_head_carries_ids_trace_and_length() -> None:
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            h, _ = await read_request(reader)
            heads.append(h)
            writer.write(answer())
            await writer.drain()

    async with Server(record) as srv:
        settings = UpstreamSettings(base_url=srv.url, headers={"X-Team": "blue"})
        backend = HTTPBackend("b", settings, "sk-up")
        reply = await backend.open(UpstreamCall("chat.completions", b'{"a":1}', False,
                                                "req_1", traceparent="00-abc-def-01"))
        assert await reply.read() == JSON
        reply.close()
        reply = await backend.open(UpstreamCall("responses", b"", True, "req_2",
                                                method="GET", path="/responses/resp 1"))
        await reply.read()
        reply.close()
        await backend.aclose()
    first, second = (h.decode("latin-1").lower() for h in heads)
    assert first.startswith("post /v1/chat/completions http/1.1\r\n")
    for line in (f"host: {srv.url.split('/')[2]}", "x-team: blue", "authorization: bearer sk-up",
                 "accept: application/json", "x-client-request-id: req_1",
                 "traceparent: 00-abc-def-01", "content-length: 7",
                 "content-type: application/json"):
        assert f"\r\n{line}\r\n" in first
    assert second.startswith("get /v1/responses/resp%201 http/1.1\r\n")
    assert "accept: text/event-stream" in second and "content-length" not in second


async def test_a_value_that_cannot_go_in_a_head_is_refused_not_sent() -> None:
    async with Server(keep_answering) as srv:
        backend = HTTPBackend("b", UpstreamSettings(base_url=srv.url), None)
        with pytest.raises(Broken, match="cannot be sent"):
            await backend.open(UpstreamCall("audio.transcriptions", b"{}", False, "req_1",
                                            content_type="multipart/form-data\r\nx-evil: 1"))
        await backend.aclose()
    with pytest.raises(ValueError, match="line break"):  # refused with the configuration
        UpstreamSettings(base_url="http://127.0.0.1:1/v1", headers={"x-a": "1\r\nx-b: 2"})
    for url, why in (("http:///v1", "names no host"), ("http://h:99999/v1", "port")):
        with pytest.raises(ValueError, match=why):
            UpstreamSettings(base_url=url)


async def test_a_connect_given_up_frees_its_slot_for_the_next_caller() -> None:
    async def no_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection, never does the TLS handshake

    async with Server(no_tls) as srv:
        origin = h1.Origin(srv.url.replace("http://", "https://"))
        pool = h1.Pool(origin, 1, connect_timeout=1.0)
        first = asyncio.create_task(call(pool))
        await asyncio.sleep(0.1)  # connecting, holding the one slot
        second = asyncio.create_task(call(pool, total=10.0))
        await asyncio.sleep(0.1)
        first.cancel()  # e.g. its client left
        # the waiter gets the slot and tries its own connect (which times out the same way),
        # instead of waiting for its whole total
        with pytest.raises(ConnectFailed, match="connect timed out"):
            await asyncio.wait_for(second, 5)
        with pytest.raises(asyncio.CancelledError):
            await first
        pool.close()


def test_a_connection_closing_under_it_is_retried_not_an_error() -> None:
    """Under uvloop (what the server runs), writing to a transport that is closing raises
    RuntimeError: a pooled connection the backend has just closed — its connection_lost not
    run yet — must be passed over (or its send fail as a disconnect, which is retried), never
    surface as an error of ours."""
    import uvloop

    async def scenario() -> None:
        async with Server(keep_answering) as srv:
            pool = pool_for(srv)
            assert await call(pool) == JSON
            idle = pool._idle[-1]
            assert idle.transport is not None
            idle.transport.close()  # closing, and nothing has run since
            assert await call(pool) == JSON
            assert pool.connects == 2
            with pytest.raises(Broken, match="connection closed before sending"):
                await idle.send(b"GET / HTTP/1.1\r\n\r\n", b"")
            pool.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_probe_says_why_and_keeps_no_connection_it_could_not_read() -> None:
    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}", status="404 Not Found"))  # any status: it answers HTTP
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
        await writer.drain()
        await reader.read()

    async with Server(answers) as srv:
        backend = HTTPBackend("b", UpstreamSettings(base_url=srv.url), None)
        assert await backend.probe() is None
        assert (await backend.probe() or "").startswith("answered malformed HTTP")
        assert backend._pool is not None and not backend._pool._open
        await backend.aclose()
    assert await backend.probe() is not None  # the server is gone: why, not an exception
    await backend.aclose()


LIMIT = 1 << 20  # 1 MiB: a whole answer's bound in the tests below


def _endless(framing: str) -> Handler:
    """A backend answering a whole answer of 64 MiB (or without end), framed as ``framing``;
    it records how much it managed to send before the gateway closed the connection."""
    async def answer_much(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        sent = 0
        head = {"length": f"content-length: {64 << 20}\r\n",
                "chunked": "transfer-encoding: chunked\r\n",
                "close": "connection: close\r\n"}[framing]
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{head}\r\n".encode())
        part = b"x" * 65536
        try:
            for _ in range(64 * 16):
                writer.write(b"10000\r\n" + part + b"\r\n" if framing == "chunked" else part)
                await writer.drain()
                sent += len(part)
        finally:
            SENT.append(sent)
    return answer_much


SENT: list[int] = []


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_whole_answer_past_the_bound_is_broken_and_not_read_on(framing: str) -> None:
    """A backend answering without end (64 MiB here, with a length, chunked or until the
    close) costs a whole answer's reader at most the bound: past it the call is Broken,
    naming the setting, and the connection is closed — the backend stops being read, so it
    could send only what the sockets' buffers hold beyond the bound."""
    SENT.clear()
    async with Server(_endless(framing)) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=30.0, silence=None)
        with pytest.raises(Broken, match=r"more than 1,048,576 bytes \(max_response_bytes\)"):
            await resp.read(LIMIT)
        h1.abandon(resp)
        for _ in range(100):
            if SENT:
                break
            await asyncio.sleep(0.05)
        assert SENT and SENT[0] < 16 << 20  # the backend was cut off, not read to its end
        assert pool._idle == []  # the connection was not kept for another call
        pool.close()


async def test_an_answer_at_the_bound_is_read_whole() -> None:
    body = b"y" * LIMIT

    async def exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(body))
        await writer.drain()
        await reader.read()

    async with Server(exact) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=5.0, silence=None)
        assert await resp.read(LIMIT) == body
        h1.done(resp)
        pool.close()


def _bomb(stream: bool) -> Handler:
    packed = gzip.compress(b"\0" * (256 << 20), 9)  # 256 MiB of zeros in ~250 KB

    async def bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        kind = "text/event-stream" if stream else "application/json"
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-encoding: gzip\r\n"
                     f"content-length: {len(packed)}\r\n\r\n".encode() + packed)
        await writer.drain()
        await reader.read()
    return bomb


async def test_a_compressed_answer_that_decodes_past_the_bound_is_broken() -> None:
    """A ~250 KB gzip body that decodes to 256 MiB: the whole answer's reader decodes it a
    bound at a time and stops past the bound — the memory it took stays near the bound,
    not the 256 MiB (measured with tracemalloc's peak)."""
    import tracemalloc

    async with Server(_bomb(stream=False)) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=30.0, silence=None)
        await asyncio.sleep(0.2)  # all of it received
        tracemalloc.start()
        try:
            with pytest.raises(Broken, match="max_response_bytes"):
                await resp.read(LIMIT)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        h1.abandon(resp)
        assert peak < 8 * LIMIT, peak
        pool.close()


async def test_a_compressed_stream_is_decoded_a_bounded_piece_at_a_time() -> None:
    """Streams are not bounded in total (they are relayed as they come), but a piece of a
    compressed one is never decoded into more than DECODED_PIECE bytes at once."""
    async with Server(_bomb(stream=True)) as srv:
        pool = pool_for(srv)
        resp = await pool.request(head(), b"{}", total=60.0, silence=10.0)
        total = biggest = 0
        async for chunk in resp.chunks():
            total += len(chunk)
            biggest = max(biggest, len(chunk))
        assert total == 256 << 20
        assert biggest <= h1.DECODED_PIECE
        h1.done(resp)
        pool.close()


async def test_the_backend_bounds_a_whole_answer_by_its_setting() -> None:
    """``[upstream] max_response_bytes`` reaches the reader: a backend configured with a
    1 MiB bound fails a 64 MiB answer as Broken; the probe (GET /models) is bounded too."""
    SENT.clear()
    async with Server(_endless("length")) as srv:
        backend = HTTPBackend("b", UpstreamSettings(base_url=srv.url, max_response_bytes=LIMIT),
                              None)
        reply = await backend.open(UpstreamCall("chat.completions", b"{}", False, "req_1",
                                                None))
        try:
            with pytest.raises(Broken, match="max_response_bytes"):
                await reply.read()
        finally:
            reply.close()
        assert "max_response_bytes" in (await backend.probe() or "")
        await backend.aclose()
