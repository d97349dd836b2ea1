"""A request's body is bounded at the connection whether or not the app reads it.

uvicorn drops a body that arrives after its answer but goes on reading it, and a body no stage
reads (a GET's) is read away so a client that leaves is heard (gatehouse/server.py): either
was read for as long as the client sent — gigabytes a minute of one worker's loop for one
client. Past the largest body any route reads (the larger of ``server.max_body_bytes`` and
``limits.max_audio_bytes``) the connection layer answers 413 or, once answered, closes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from gatehouse.app import create_app
from tests.unit.conftest import make_settings
from tests.unit.test_server_gone import Slow, served

MAX_BODY, MAX_AUDIO = 64 * 1024, 128 * 1024  # the cap: 128 KiB
ENDLESS = b"content-length: 100000000000\r\n"
CHUNK = b"x" * 65536
SENT_AT_MOST = 64 * 1024 * 1024


BOUNDARY = b"b0undary"
UPLOAD_TYPE = b"content-type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"


def upload(audio_bytes: int) -> bytes:
    """A transcription upload of the demo model with ``audio_bytes`` of audio."""
    return (b"--" + BOUNDARY + b"\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\n"
            b"demo\r\n--" + BOUNDARY + b"\r\ncontent-disposition: form-data; name=\"file\"; "
            b"filename=\"a.wav\"\r\ncontent-type: audio/wav\r\n\r\n" + b"\0" * audio_bytes +
            b"\r\n--" + BOUNDARY + b"--\r\n")


def settings(tmp: Path, **sections: Any) -> Any:
    server = {"max_body_bytes": MAX_BODY, **sections.pop("server", {})}
    return make_settings(tmp, server=server, limits={"max_audio_bytes": MAX_AUDIO}, **sections)


async def send_until_closed(port: int, head: bytes, piece: bytes = CHUNK) -> tuple[bytes, int]:
    """Send ``head`` and then body bytes until the server closes (or SENT_AT_MOST), reading
    what comes back meanwhile (as curl does): the answer, and how many body bytes went."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()

    async def read() -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                answer.extend(data)

    reading = asyncio.create_task(read())
    writer.write(head + b"\r\n")
    sent = 0
    try:
        while sent < SENT_AT_MOST:
            writer.write(piece)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(piece)
    except (ConnectionError, TimeoutError):
        pass
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reading, 5)
    writer.close()
    return bytes(answer), sent


def answered(app: Any, endpoint: str) -> dict[tuple[str, str], float]:
    """gatehouse_requests_total of an endpoint: (status, outcome) → count."""
    return {(x.labels["status"], x.labels["outcome"]): x.value
            for metric in app.metrics.requests.collect() for x in metric.samples
            if x.name.endswith("_total") and x.labels.get("endpoint") == endpoint}


def closed_by_reason(app: Any, reason: str) -> float:
    for metric in app.metrics.connections_closed.collect():
        for sample in metric.samples:
            if sample.labels.get("reason") == reason and sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0


async def test_a_body_sent_on_after_its_answer_is_not_read_for_ever(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, identity={"require_key": True}))
    async with served(app) as port:
        # answered at once (the model list; a 401 before the body is read), the body goes on
        for head in (b"GET /v1/models HTTP/1.1\r\nhost: gw\r\n" + ENDLESS,
                     b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                     b"content-type: application/json\r\n" + ENDLESS):
            answer, sent = await send_until_closed(port, head)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
            # closed a little past the cap (what the sockets' buffers held), not 64 MiB later
            assert sent < SENT_AT_MOST // 4, sent
        # a chunked body of endless chunk extensions: 60 KB of framing per byte of payload
        answer, sent = await send_until_closed(
            port, b"GET /v1/models HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n",
            b"1;" + b"a" * 60_000 + b"\r\nx\r\n")
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
        assert sent < SENT_AT_MOST // 4, sent
        assert closed_by_reason(app, "body_too_large") == 3


async def test_a_get_body_past_the_cap_is_413_and_its_route_is_cancelled(
        tmp_path: Path) -> None:
    from gatehouse.pipeline import Pipeline
    from gatehouse.server import Route

    app = create_app(settings(tmp_path))
    slow = Slow()
    telemetry = next(s for s in app.routes["/v1/models"].pipeline.stages
                     if s.name == "telemetry")
    app.routes["/v1/slow"] = Route("GET", Pipeline([telemetry, slow]), "slow")
    async with served(app) as port:
        answer, sent = await send_until_closed(
            port, b"GET /v1/slow HTTP/1.1\r\nhost: gw\r\n" + ENDLESS)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert b'"code":"request_too_large"' in answer and b"x-request-id: req_" in answer
        assert sent < SENT_AT_MOST // 4, sent
        await asyncio.wait_for(slow.left.wait(), 5)
        await asyncio.sleep(0.1)  # its exits
        # recorded as what the client was answered, not as a client that left (499)
        assert answered(app, "slow") == {("413", "error"): 1.0}


async def test_an_upload_between_the_two_limits_is_still_read_whole(tmp_path: Path) -> None:
    """The cap is the largest body a route reads: an audio file over max_body_bytes but under
    max_audio_bytes reaches the upload check (here: a model that takes no audio), not 413."""
    app = create_app(settings(tmp_path))
    async with served(app) as port:
        body = upload(100 * 1024)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: gw\r\n" + UPLOAD_TYPE +
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 ") and b" 413 " not in status, status
        assert closed_by_reason(app, "body_too_large") == 0


async def test_a_chunked_upload_under_the_limit_in_small_chunks_is_not_cut(
        tmp_path: Path) -> None:
    """Framing is not payload: 127 KiB (under the 128 KiB cap) in 4-byte chunks carries ~220 KB
    of chunk framing, far more than the head limit's slack — and was a 413 before."""
    app = create_app(settings(tmp_path))
    async with served(app) as port:
        body = upload(127 * 1024)
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4]), body[i:i + 4])
                          for i in range(0, len(body), 4)) + b"0\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: gw\r\n" + UPLOAD_TYPE +
                     b"transfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)  # the head alone first: all of the framing counts as body
        writer.write(framed)
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 ") and b" 413 " not in status, status
        assert closed_by_reason(app, "body_too_large") == 0


async def test_after_an_early_answer_the_next_head_is_bounded_again(tmp_path: Path) -> None:
    """A request answered before its body had all come (a 401): once the body ends the
    connection waits for a head — bounded in size and in time again (it stayed 'busy': a
    64 MiB header was taken, half a head held for ever)."""
    app = create_app(settings(tmp_path, identity={"require_key": True},
                              server={"head_timeout": 2.0}))
    async with served(app) as port:
        first = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: "
                 b"application/json\r\ncontent-length: 10\r\n\r\n")
        answer, sent = await send_until_closed(
            port, first[:-2], b"0123456789GET /v1/models HTTP/1.1\r\nhost: gw\r\nx-a: " +
            b"a" * 65526)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
        assert sent < SENT_AT_MOST // 4, sent  # the head limits cut it (64 MiB went before)
        # half a head after the early answer: cut at head_timeout, not held for ever
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"0123456789GET /v1/models HTTP/1.1\r\nhost: gw\r\n")
        got = await asyncio.wait_for(reader.read(), 10)  # until closed (timed out before)
        writer.close()
        assert got.startswith(b"HTTP/1.1 401"), got[:100]


async def test_a_pipelined_request_is_not_counted_in_the_body_before_it(tmp_path: Path) -> None:
    """An upload just under the cap whose last bytes share a segment with the next request
    (60 KiB of chat, pipelined): each is answered as itself — the next one's bytes were
    counted as the upload's, a 413 for both."""
    app = create_app(settings(tmp_path))
    async with served(app) as port:
        body = upload(127 * 1024)
        chat = (b'{"model":"demo","max_tokens":2,"messages":[{"role":"user","content":"' +
                b"x" * (60 * 1024) + b'"}]}')
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: gw\r\n" + UPLOAD_TYPE +
                     b"content-length: %d\r\n\r\n" % len(body))
        await writer.drain()
        await asyncio.sleep(0.1)  # the head alone: the whole body is counted as body
        writer.write(body[:-100])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(body[-100:] + b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(chat)
                     + chat)
        statuses = []
        for _ in range(2):
            statuses.append(await asyncio.wait_for(reader.readline(), 10))
            length = 0
            while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line:  # closed
                break
            await reader.readexactly(length)
        writer.close()
        assert len(statuses) == 2 and b" 413 " not in statuses[0], statuses
        assert statuses[1].startswith(b"HTTP/1.1 200"), statuses
        assert closed_by_reason(app, "body_too_large") == 0
