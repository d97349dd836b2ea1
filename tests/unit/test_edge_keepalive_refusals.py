"""A refusal of a later request on a kept-alive connection is answered, after the answers
before it, never in their place.

The connection layer refuses a head it will not read (414, 431, 400 for bytes that are not
HTTP, 408 for a head that stops arriving) with an answer in OpenAI's error shape and a request
id, then closes. On a connection that had already carried a request it wrote nothing: the
first answer having been started, the refusal was skipped, and the client met a bare close —
no status, no id, nothing to report. And a bad head pipelined behind a request still running
was answered *as that request* (its id, its record, before its own answer), the running
request cut: the client reads answers in order, so it took the 431 for its first request."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import orjson

from gatehouse.app import create_app
from tests.unit.conftest import make_settings
from tests.unit.test_edge_body_cap import answered
from tests.unit.test_server_gone import served

HEALTH = b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n"
BIG_HEADER = b"GET /healthz HTTP/1.1\r\nhost: gw\r\nx-big: " + b"a" * 9000 + b"\r\n\r\n"
LONG_LINE = b"GET /healthz?" + b"q" * 9000 + b" HTTP/1.1\r\nhost: gw\r\n\r\n"
NOT_HTTP = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40


async def read_all(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes."""
    got = bytearray()
    async with asyncio.timeout(timeout):
        while data := await reader.read(65536):
            got.extend(data)
    return bytes(got)


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP answers in ``raw``, in order (Content-Length or chunked bodies)."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, raw = raw[:n], raw[n:]
        else:  # chunked
            body = b""
            while True:
                size_line, _, raw = raw.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, raw = body + raw[:size], raw[size + 2:]
                if size == 0:
                    break
        out.append((status, headers, body))
    return out


def settings(tmp: Path, **sections: Any) -> Any:
    return make_settings(tmp, server={"head_timeout": 1.0, **sections.pop("server", {})},
                         **sections)


async def test_a_bad_head_after_a_kept_alive_answer_is_answered(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path))
    async with served(app) as port:
        for bad, status, code in ((BIG_HEADER, 431, "request_header_fields_too_large"),
                                  (LONG_LINE, 414, "uri_too_long"),
                                  (NOT_HTTP, 400, "invalid_http")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HEALTH)
            first = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 10)
            assert first.startswith(b"HTTP/1.1 200")
            writer.write(bad)
            raw = await read_all(reader)  # and closed
            writer.close()
            (got,) = answers(raw)  # it was a bare close
            assert got[0] == status, raw[:300]
            assert got[1]["connection"] == "close"
            assert re.fullmatch(r"req_\w+", got[1]["x-request-id"])
            error = orjson.loads(got[2])["error"]
            assert error["code"] == code, error
        # each recorded as the connection layer's answer (it had no record either)
        assert answered(app, "connection") == {("431", "error"): 1.0, ("414", "error"): 1.0,
                                               ("400", "error"): 1.0}


async def test_a_head_that_stops_after_a_kept_alive_answer_is_answered_408(
        tmp_path: Path) -> None:
    app = create_app(settings(tmp_path))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEALTH)
        await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 10)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: g")  # half a head, then nothing
        raw = await read_all(reader)
        writer.close()
        (got,) = answers(raw)
        assert got[0] == 408, raw[:300]
        assert orjson.loads(got[2])["error"]["code"] == "request_timeout"


def stream_request(tokens: int) -> bytes:
    body = orjson.dumps({"model": "demo", "stream": True, "max_tokens": tokens,
                         "messages": [{"role": "user", "content": "hello"}]})
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)


async def test_a_bad_head_pipelined_behind_a_running_request_is_answered_after_it(
        tmp_path: Path) -> None:
    # the first answer takes ~0.5 s (10 tokens, 50 ms each) and has not started when the
    # bad head arrives (in the same write)
    app = create_app(settings(tmp_path, demo={"ms_per_token": 50, "reply_tokens": 10}))
    async with served(app) as port:
        for bad, status in ((BIG_HEADER, 431), (NOT_HTTP, 400)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(stream_request(10) + bad)
            raw = await read_all(reader)
            writer.close()
            got = answers(raw)
            assert [a[0] for a in got] == [200, status], raw[:300]
            first, refusal = got
            assert first[2].endswith(b"data: [DONE]\n\n")  # whole, not cut
            assert first[1]["x-request-id"] != refusal[1]["x-request-id"]
            assert refusal[1]["connection"] == "close"
        await asyncio.sleep(0.2)  # the exits
        # the running requests are recorded as what they were answered, not as the refusal;
        # the refusals as the connection layer's
        assert answered(app, "chat.completions") == {("200", "ok"): 2.0}
        assert answered(app, "connection") == {("431", "error"): 1.0, ("400", "error"): 1.0}


async def test_a_bad_head_behind_a_pipelined_queue_waits_for_all_of_it(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, demo={"ms_per_token": 20, "reply_tokens": 5}))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(stream_request(5) + HEALTH + stream_request(5) + BIG_HEADER)
        raw = await read_all(reader)
        writer.close()
        assert [a[0] for a in answers(raw)] == [200, 200, 200, 431], raw[:500]


async def test_bytes_sent_on_behind_a_refused_head_are_bounded(tmp_path: Path) -> None:
    """While the answers before it finish, what follows a refused head is not read as HTTP
    and not kept: past the head limit the connection is closed at once."""
    app = create_app(settings(tmp_path, demo={"ms_per_token": 200, "reply_tokens": 100}))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(stream_request(100) + BIG_HEADER)
        await asyncio.wait_for(reader.readuntil(b"data: "), 10)  # the 20-s answer runs
        sent = 0
        try:
            async with asyncio.timeout(10):
                while sent < 64 * 1024 * 1024:
                    writer.write(b"x" * 65536)
                    await writer.drain()
                    sent += 65536
        except (ConnectionError, TimeoutError):
            pass
        raw = b""
        with contextlib.suppress(ConnectionError):  # (a reset: it had more unread)
            raw = await read_all(reader)
        writer.close()
        assert sent < 16 * 1024 * 1024, sent
        assert b"data: [DONE]" not in raw  # cut: the client's own connection, its own doing


async def test_a_head_sent_while_an_answer_is_made_is_bounded(tmp_path: Path) -> None:
    """The next request's head, pipelined while the answer before it is made, is counted as
    it arrives: one endless header was kept by the parser for as long as the answer ran
    (48 MiB in 2.6 s, +80 MB of the worker's memory). Past the head limit it is refused —
    after the answer, which is not cut."""
    app = create_app(settings(tmp_path, demo={"ms_per_token": 100, "reply_tokens": 10}))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(stream_request(10))
        await asyncio.wait_for(reader.readuntil(b"data: "), 10)  # the 1-s answer runs
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: gw\r\nx-big: ")
        sent = 0
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(5):
                while sent < 48 * 1024 * 1024:
                    writer.write(b"a" * 4096)
                    await writer.drain()
                    sent += 4096
        # another client is served meanwhile, and at once
        other_reader, other = await asyncio.open_connection("127.0.0.1", port)
        other.write(HEALTH)
        assert (await asyncio.wait_for(other_reader.readuntil(b'{"status":"ok"}'), 2)
                ).startswith(b"HTTP/1.1 200")
        other.close()
        raw = b""
        with contextlib.suppress(ConnectionError):
            raw = await read_all(reader)
        writer.close()
        assert sent < 8 * 1024 * 1024, sent
        assert b"HTTP/1.1 431 " in raw or raw.count(b"HTTP/1.1 ") <= 1, raw[-300:]


async def test_half_a_head_sent_while_an_answer_is_made_gets_its_408(tmp_path: Path) -> None:
    """Half a head pipelined while the first answer is made, then nothing: 408 from the
    answer's end (as for half a head after it) — it was a bare close at the keep-alive
    timeout."""
    app = create_app(settings(tmp_path, demo={"ms_per_token": 50, "reply_tokens": 10},
                              server={"keepalive_timeout": 30.0}))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(stream_request(10) + b"GET /healthz HTTP/1.1\r\nhost: g")
        raw = await read_all(reader, timeout=10)
        writer.close()
        got = answers(raw)
        assert [a[0] for a in got] == [200, 408], raw[-300:]
        assert orjson.loads(got[1][2])["error"]["code"] == "request_timeout"


async def test_a_refusal_held_behind_an_answer_that_closes_is_not_recorded(
        tmp_path: Path) -> None:
    """The answer before it closes the connection (an HTTP/1.0 one, even kept alive; a
    shutdown): the held refusal cannot be written, so it is not recorded as answered."""
    app = create_app(settings(tmp_path, demo={"ms_per_token": 50, "reply_tokens": 10}))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        closing = stream_request(10).replace(b"HTTP/1.1\r\nhost: gw\r\n",
                                             b"HTTP/1.0\r\nhost: gw\r\nconnection: keep-alive\r\n")
        writer.write(closing + BIG_HEADER)
        raw = await read_all(reader)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 ") and b"data: [DONE]" in raw, raw[-200:]
        assert b"HTTP/1.1 431" not in raw
        await asyncio.sleep(0.2)
        assert answered(app, "connection") == {}  # (it was recorded as a 431 given)


async def test_a_blank_line_between_requests_is_ignored_not_a_slow_head(
        tmp_path: Path) -> None:
    """A CRLF sent while an answer is made (some clients end a POST's body with one more)
    begins no request (RFC 9112 §2.2): the connection closes quietly when idle — no 408, no
    slow-client offence towards a ban."""
    from tests.unit.test_edge_body_cap import closed_by_reason

    app = create_app(settings(tmp_path, demo={"ms_per_token": 50, "reply_tokens": 10}))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(stream_request(10))
        first = await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        writer.write(b"\r\n")
        raw = first + await read_all(reader, timeout=15)  # (uvicorn's keep-alive: 5 s)
        writer.close()
        assert [a[0] for a in answers(raw)] == [200], raw[-300:]
        assert closed_by_reason(app, "head_timeout") == 0
        assert answered(app, "connection") == {}
