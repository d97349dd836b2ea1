"""The connection layer against a real ``gatehouse serve``: floods of headers, slow heads and
bodies, idle and surplus connections — answered in bounded time while a well-behaved client
on another address keeps being served (gatehouse/edge/protocol.py, docs/security.md).

Attackers connect from 127.0.0.2…127.0.0.9 (all loopback on Linux) so the per-address caps
they trip never touch the bystander on 127.0.0.1. Every attack is bounded in bytes,
connections and time, and sent only to 127.0.0.1."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.test_identity import cli
from tests.support.procs import Gateway, Upstream

# short deadlines, but not so short that a starved test process cannot dial its 100 slowloris
# connections, or send a body in pieces, inside them
FAST = {"head_timeout": 3.0, "body_timeout": 3.0, "keepalive_timeout": 1.0,
        "max_connections_per_address": 100}


_dialed: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _dialed:
        _dialed.pop().close()
    _unread.clear()


def dial(gw: Gateway, source: str) -> socket.socket:
    s = socket.socket()
    _dialed.append(s)
    s.bind((source, 0))
    s.connect(("127.0.0.1", gw.port))
    return s


def read_answer(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (or ``timeout``)."""
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def send_all(s: socket.socket, data: bytes) -> None:
    """Send what the server takes; it may close early (that is the point)."""
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


# bytes read past an answer on a connection: the start of the next one (pipelined answers
# arrive together)
_unread: dict[socket.socket, bytes] = {}


def read_http(s: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole answer with a Content-Length from a kept-alive connection."""
    s.settimeout(timeout)
    data = _unread.pop(s, b"")
    while b"\r\n\r\n" not in data:
        data += recv_some(s)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += recv_some(s)
    if len(body) > length:
        _unread[s] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


def recv_some(s: socket.socket) -> bytes:
    chunk = s.recv(65536)
    if not chunk:
        raise AssertionError("the server closed the connection mid-answer")
    return chunk


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


class Bystander:
    """A well-behaved client on 127.0.0.1 asking for /healthz while an attack runs."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.times: list[float] = []
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    code = client.get(self.gw.url + "/healthz").status_code
                except httpx.HTTPError:
                    code = 0
                self.times.append(time.perf_counter() - started)
                self.codes.append(code)
                time.sleep(0.02)

    @contextmanager
    def watching(self) -> Iterator[Bystander]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(35)


@pytest.fixture(scope="module")
def gw(proc_dir: Path) -> Iterator[Gateway]:
    """One gateway with short deadlines for the tests that need no settings of their own."""
    gateway = Gateway(proc_dir, {"server": FAST})
    yield gateway
    gateway.stop()


class Closed:
    """Counts of ``gatehouse_edge_connections_closed_total`` by reason, since it was made."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.before = {r: gw.metric(CLOSED, reason=r) for r in REASONS}

    def __getitem__(self, reason: str) -> float:
        return self.gw.metric(CLOSED, reason=reason) - self.before[reason]


CLOSED = "gatehouse_edge_connections_closed_total"
REASONS = ("head_too_large", "uri_too_long", "invalid_http", "head_timeout", "body_timeout", "idle_timeout",
           "per_address", "server_full", "evicted", "send_timeout")


def record_of(gw: Gateway, answer: bytes) -> dict[str, Any]:
    """The access-log record of a refusal, by the request id its answer carried."""
    return gw.record(answer.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode())


def test_a_header_flood_is_refused_431_while_others_are_served(gw: Gateway) -> None:
    closed = Closed(gw)
    flood = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 2_000_000 + b"\r\n"  # 16 MB
    with Bystander(gw).watching() as bystander:
        answers = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            s = dial(gw, source)
            send_all(s, flood)
            answers.append(read_answer(s))
            s.close()
        time.sleep(0.2)
    for answer in answers:
        assert status_of(answer) == 431, answer[:200]
        assert b'"code":"request_header_fields_too_large"' in answer
        assert b"x-request-id: req_" in answer
    # the worker never stalled: quadratic header joins took minutes for 16 MB
    assert set(bystander.codes) == {200}
    assert max(bystander.times) < 10.0, max(bystander.times)  # (quadratic: minutes)
    assert closed["head_too_large"] == 3


def test_a_flood_of_pipelined_requests_is_answered_in_order_while_others_are_served(
        gw: Gateway) -> None:
    """40,000 requests in one write (1.4 MB): each is answered, in order, and the worker
    stays free for everyone else — keeping track of the answers a pipelining client left
    behind once scanned them all at each new request (quadratic: ~20 s of a stalled loop)."""
    flood = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 40_000
    with Bystander(gw).watching() as bystander:
        s = dial(gw, "127.0.0.6")
        send_all(s, flood)
        s.settimeout(60)
        got = b""
        while got.count(b"HTTP/1.1 ") < 40_000:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        s.close()
        time.sleep(0.2)
    assert got.count(b"HTTP/1.1 200 OK") == 40_000
    assert set(bystander.codes) == {200}
    assert max(bystander.times) < 10.0, max(bystander.times)  # (quadratic: ~20 s)


def test_one_huge_header_is_refused_before_it_is_read(gw: Gateway) -> None:
    closed = Closed(gw)
    s = dial(gw, "127.0.0.2")
    started = time.perf_counter()
    send_all(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n")
    answer = read_answer(s)
    # 431 before the 64 MB were taken in (or the reset of the rest of the upload)
    assert status_of(answer) in (431, 0)
    assert time.perf_counter() - started < 10
    assert closed["head_too_large"] == 1
    assert httpx.get(gw.url + "/healthz").status_code == 200


@pytest.mark.parametrize(("head", "status", "code"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, b"uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101))
     + b"\r\n", 431, b"request_header_fields_too_large"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n", 431,
     b"request_header_fields_too_large"),
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000)
                                            for i in range(9)) + b"\r\n", 431,
     b"request_header_fields_too_large"),
])
def test_each_head_limit(gw: Gateway, head: bytes, status: int, code: bytes) -> None:
    s = dial(gw, "127.0.0.2")
    send_all(s, head)
    answer = read_answer(s)
    assert status_of(answer) == status and code in answer, answer[:300]
    record = record_of(gw, answer)  # recorded, though no stage ran for it
    assert record["endpoint"] == "connection" and record["status"] == status
    assert record["error_class"] == "client_error" and record["client"] == "127.0.0.2"
    assert record["error_code"] == code.decode() and record["component"] == "web"
    # just under the limits still works
    ok = httpx.get(gw.url + "/healthz", headers={f"x-{i}": "v" * 3000 for i in range(9)})
    assert ok.status_code == 200


@pytest.mark.parametrize("head", [
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     b"Content-Length: 3\r\n\r\n{}"),
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 2\r\n\r\n{}"),
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_bytes_that_are_not_http_get_an_answer_with_a_request_id(gw: Gateway,
                                                                head: bytes) -> None:
    """uvicorn's own answer was a plain-text 400 'Invalid HTTP request received.', with no
    request id and no record."""
    s = dial(gw, "127.0.0.2")
    send_all(s, head)
    answer = read_answer(s)
    assert status_of(answer) == 400 and b'"code":"invalid_http"' in answer, answer[:300]
    assert b"content-type: application/json" in answer
    record = record_of(gw, answer)
    assert record["endpoint"] == "connection" and record["status"] == 400
    assert record["error_code"] == "invalid_http" and record["client"] == "127.0.0.2"


def test_slowloris_heads_are_cut_and_capped_while_others_are_served(gw: Gateway) -> None:
    closed = Closed(gw)
    with Bystander(gw).watching() as bystander:
        held = [dial(gw, "127.0.0.2") for _ in range(100)]
        for s in held:
            send_all(s, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        surplus = dial(gw, "127.0.0.2")
        refused = read_answer(surplus)
        answers = [read_answer(s, timeout=15) for s in held]
    assert status_of(refused) == 429 and b'"code":"too_many_connections"' in refused
    assert [status_of(a) for a in answers] == [408] * 100
    assert b'"code":"request_timeout"' in answers[0]
    assert set(bystander.codes) == {200}
    assert statistics.median(bystander.times) < 2.0
    assert closed["head_timeout"] == 100
    assert closed["per_address"] == 1
    cut = record_of(gw, answers[0])
    assert (cut["status"], cut["method"], cut["path"], cut["component"]) == \
        (408, "GET", "/v1/models", "api")
    capped = record_of(gw, refused)
    assert (capped["status"], capped["error_class"], capped["path"]) == \
        (429, "rate_limited", "")


def test_a_stalled_body_is_answered_408(gw: Gateway) -> None:
    closed = Closed(gw)
    s = dial(gw, "127.0.0.2")
    started = time.perf_counter()
    send_all(s, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: 58\r\n\r\n{\"model\":")
    answer = read_answer(s)
    assert status_of(answer) == 408 and b"request body stopped arriving" in answer
    assert time.perf_counter() - started < 15  # was: no answer for 150 s and more
    assert closed["body_timeout"] == 1
    # recorded under the id the client got, as the 408 it was (it was: a 499 "client gone"
    # under another id, and the client's id found nothing)
    record = record_of(gw, answer)
    assert answer.count(record["request_id"].encode()) == 2  # the header and the body
    assert (record["status"], record["error_code"], record["path"]) == \
        (408, "request_timeout", "/v1/chat/completions")


def test_a_plain_answer_is_one_write(gw: Gateway) -> None:
    """Its head and body leave in one write system call (edge/cork.py), counted by the kernel
    (/proc/PID/io ``syscw``) over 300 keep-alive answers: uvicorn alone makes two."""
    def writes() -> int:
        with open(f"/proc/{gw.proc.pid}/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("syscw:"))

    s = dial(gw, "127.0.0.2")
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    send_all(s, request)
    read_http(s)
    before = writes()
    for _ in range(300):
        send_all(s, request)
        assert status_of(read_http(s)) == 200
    made = writes() - before
    assert made < 300 * 1.3, made  # (and a few of the gateway's own: logs, the store)


def test_a_body_sent_in_pieces_within_the_deadline_is_fine(gw: Gateway) -> None:
    body = b'{"model":"demo","messages":[{"role":"user","content":"hi"}]}'
    s = dial(gw, "127.0.0.2")
    send_all(s, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 20):  # 1 s pauses, each under the 3 s deadline
        time.sleep(1.0)
        send_all(s, body[i:i + 20])
    assert status_of(read_answer(s)) == 200


def test_silent_and_idle_connections_are_closed(gw: Gateway) -> None:
    closed = Closed(gw)
    silent = dial(gw, "127.0.0.2")
    assert read_answer(silent, timeout=15) == b""  # closed without an answer: nothing asked
    idle = dial(gw, "127.0.0.2")
    send_all(idle, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = read_answer(idle, timeout=15)  # the answer, then the close after the keep-alive
    assert status_of(answer) == 200 and answer.count(b"HTTP/1.1") == 1
    assert closed["idle_timeout"] == 1


def test_when_every_connection_is_taken_the_oldest_waiting_one_makes_room(
        start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"server": {**FAST, "max_connections": 40, "head_timeout": 30.0}})
    # from many addresses, each under its own cap: 40 connections that never send a head
    held = [dial(gw, f"127.0.0.{2 + i % 8}") for i in range(40)]
    time.sleep(0.3)
    with httpx.Client(timeout=10) as client:
        assert client.get(gw.url + "/healthz").status_code == 200
    # the first one held was closed to make room
    assert read_answer(held[0], timeout=5) == b""
    assert gw.metric(CLOSED, reason="evicted") >= 1


def test_slow_clients_are_banned_by_the_detector(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"server": FAST,
                        "edge": {"detector": {"enabled": True, "max_slow_clients": 3}}})
    slow = [dial(gw, "127.0.0.5") for _ in range(4)]
    for s in slow:
        send_all(s, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
    assert [status_of(read_answer(s)) for s in slow] == [408] * 4
    late = dial(gw, "127.0.0.5")
    send_all(late, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = read_answer(late)
    assert status_of(answer) == 403 and b'"code":"1020"' in answer
    assert gw.metric("gatehouse_edge_bans_total", cause="slow_client") == 1
    # another address is untouched
    assert httpx.get(gw.url + "/v1/models").status_code == 200


def test_the_sdk_works_through_the_limits(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "x" * 100_000}])
    assert reply.choices[0].message.content
    stream = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def one_slot_gateway(start_gateway: Callable[..., Gateway], up_a: Upstream,
                     **server: Any) -> Gateway:
    """A model with one admission slot, served by ``up_a`` sending ~40 MB of events."""
    gw = start_gateway({
        "server": {**FAST, "send_timeout": 3.0, **server},
        "upstreams": {"a": {"base_url": up_a.url + "/v1"}},
        "models": {"one": {"backends": [{"upstream": "a", "model": "m"}],
                           "max_concurrency": 1}},
        "admission": {"classes": {"normal": {"queue_timeout": 0.5, "max_queue": 10}}}})
    up_a.control(reply_tokens=400_000)  # ~40 MB of events, sent as fast as it can
    return gw


def long_stream(gw: Gateway) -> tuple[socket.socket, bytes]:
    """That model's long stream asked for on a socket with a small receive buffer: the socket
    and the first bytes of the answer (its head)."""
    s = socket.socket()
    _dialed.append(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", gw.port))
    body = json.dumps({"model": "one", "stream": True, "max_tokens": 400_000,
                       "messages": [{"role": "user", "content": "go"}]}).encode()
    send_all(s, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    s.settimeout(10)
    head = s.recv(1024)
    assert status_of(head) == 200, head
    return s, head


def test_a_client_that_stops_reading_a_stream_is_cut_and_frees_its_slot(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """A client that asks for a long stream and stops reading it (its receive window full)
    holds the model's only slot and an upstream connection until ``send_timeout`` cuts it;
    then the next caller gets the slot, and the gateway's memory did not take the stream."""
    gw = one_slot_gateway(start_gateway, up_a)
    try:
        rss_before = rss_of(gw.proc.pid)
        closed = Closed(gw)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        _, head = long_stream(gw)  # the answer has started …
        started = time.monotonic()  # … and from here on nothing is read
        with pytest.raises(openai.APIStatusError) as busy:  # the slot is held meanwhile
            client.chat.completions.create(
                model="one", max_tokens=5, messages=[{"role": "user", "content": "me"}])
        assert busy.value.status_code == 503
        while closed["send_timeout"] < 1 and time.monotonic() - started < 15:
            time.sleep(0.2)
        assert closed["send_timeout"] == 1  # cut after the deadline, not at the end of the
        assert time.monotonic() - started < 12  # 40 MB answer
        reply = client.chat.completions.create(  # the slot is free again
            model="one", max_tokens=5, messages=[{"role": "user", "content": "me"}])
        assert reply.choices[0].message.content
        # the upstream's stream was cut too (it notices at its next write), and the gateway
        # did not buffer what it offered
        aborted_by = time.monotonic() + 10
        while up_a.stats()["streams_aborted"] < 1 and time.monotonic() < aborted_by:
            time.sleep(0.1)
        assert up_a.stats()["streams_aborted"] == 1
        assert rss_of(gw.proc.pid) - rss_before < 10 * 2**20
        record = record_of(gw, head)  # the cut request, as the access log has it
        assert (record["status"], record["outcome"]) == (499, "client_disconnected"), record
    finally:
        up_a.reset()


def test_a_client_that_reads_a_little_now_and_then_is_cut_too(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """A "trickle" reader takes 1 MB every second (under the min_send_rate of 4 MB/s set
    here): each wait for it is shorter than send_timeout (3 s: the gateway's buffers empty
    after about 1.5 MB taken), which alone would let it hold the model's slot until the 40 MB
    answer ended; the waits add up, less what it took, and it is cut within seconds."""
    gw = one_slot_gateway(start_gateway, up_a, min_send_rate=4_000_000)
    try:
        closed = Closed(gw)
        s, _ = long_stream(gw)
        started = time.monotonic()
        taken = bursts = 0
        while closed["send_timeout"] < 1 and time.monotonic() - started < 30:
            time.sleep(1.0)
            burst = 0
            try:
                while burst < 1 << 20:
                    chunk = s.recv((1 << 20) - burst)
                    if not chunk:
                        break
                    burst += len(chunk)
            except (TimeoutError, ConnectionResetError):
                pass
            taken += burst
            bursts += burst > 0
        cut_after = time.monotonic() - started
        print(f"\ntrickle reader: {taken / 1024:.0f} KB in {bursts} bursts, cut after "
              f"{cut_after:.1f} s")
        assert closed["send_timeout"] == 1, (taken, bursts)
        assert bursts >= 2  # it did read, more than once: each wait was shorter than 3 s
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(  # the slot is free again
            model="one", max_tokens=5, messages=[{"role": "user", "content": "me"}])
        assert reply.choices[0].message.content
    finally:
        up_a.reset()


def test_a_slow_steady_reader_is_never_cut_however_long_one_wait_lasts(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """A client taking 64 KB every 0.25 s (~250 KB/s, well over the min_send_rate of 20 KB/s
    set here) of a 40 MB stream: the gateway's buffers empty only after ~1.5 MB is taken, so
    one wait lasts ~6 s, twice the send_timeout (3 s) — but the client is taking what it is
    sent, so it is not cut."""
    gw = one_slot_gateway(start_gateway, up_a, min_send_rate=20_000)
    try:
        closed = Closed(gw)
        s, _ = long_stream(gw)
        started = time.monotonic()
        taken = 0
        while time.monotonic() - started < 15:
            time.sleep(0.25)
            burst = 0
            try:
                while burst < 65_536:
                    chunk = s.recv(65_536 - burst)
                    if not chunk:
                        raise AssertionError(f"cut after {taken + burst} bytes "
                                             f"{ {r: closed[r] for r in REASONS} } "
                                             f"{gw.log.read_text()[-1500:]}")
                    burst += len(chunk)
            except ConnectionResetError as exc:
                raise AssertionError(f"cut after {taken + burst} bytes") from exc
            taken += burst
        print(f"\nslow steady reader: {taken / 1024:.0f} KB in 15 s, not cut")
        assert closed["send_timeout"] == 0
        assert taken > 1 << 20
    finally:
        up_a.reset()


def test_a_request_sent_behind_an_unread_answer_does_not_lift_its_deadline(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """A second request on the connection (pipelined behind the long answer, never read):
    reading its head must not clear the first answer's send deadline (it did: the
    connection's one deadline was set for the new head, then cleared — the answer waited
    for ever, holding the model's slot); and once cut, the first answer must hear that its
    client is gone (uvicorn told only the pipelined request: the answer went on relaying its
    upstream's into the closed connection, to the end, holding the slot meanwhile)."""
    gw = one_slot_gateway(start_gateway, up_a)
    try:
        closed = Closed(gw)
        before = up_a.stats()
        s, _ = long_stream(gw)
        started = time.monotonic()
        send_all(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and nothing is read
        while closed["send_timeout"] < 1 and time.monotonic() - started < 30:
            time.sleep(0.2)
        assert closed["send_timeout"] == 1, {r: closed[r] for r in REASONS}
        cut_at = time.monotonic()
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        while True:  # the slot is free again, once the cut request has ended
            try:
                reply = client.chat.completions.create(
                    model="one", max_tokens=5, messages=[{"role": "user", "content": "me"}])
                break
            except openai.InternalServerError:
                assert time.monotonic() - cut_at < 20, "the cut answer kept its slot"
                time.sleep(0.2)
        print(f"\nslot free {time.monotonic() - cut_at:.2f} s after the cut")
        assert reply.choices[0].message.content
        while up_a.stats()["streams_aborted"] == before["streams_aborted"] \
                and time.monotonic() - cut_at < 10:
            time.sleep(0.1)
        after = up_a.stats()  # the upstream's answer was given up, not read to its end
        assert after["streams_aborted"] == before["streams_aborted"] + 1, (before, after)
        assert after["streams_completed"] == before["streams_completed"], (before, after)
    finally:
        up_a.reset()


def test_a_pipelined_request_running_is_not_taken_for_an_idle_connection(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """Two requests sent in one write: when the first's answer is sent, the second starts on
    the same connection. That connection must count as busy, not as one idle and waiting for
    a head: when every connection is taken, the one idle longest is closed to make room —
    and it was the one running the second request (its answer lost)."""
    gw = start_gateway({
        "server": {**FAST, "max_connections": 4},
        "upstreams": {"a": {"base_url": up_a.url + "/v1"}},
        "models": {"slow": {"backends": [{"upstream": "a", "model": "m"}]}}})
    up_a.control(first_byte_ms=1500)
    try:
        body = json.dumps({"model": "slow", "max_tokens": 5,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        s = dial(gw, "127.0.0.3")
        send_all(s, request + request)
        first = read_http(s, timeout=30)
        assert status_of(first) == 200, first
        # the second request runs now (its upstream answers after 1.5 s); four new
        # connections, each idle: the last one needs a place, and an idle one makes it
        evicted_before = gw.metric(CLOSED, reason="evicted")
        fillers = [dial(gw, "127.0.0.4") for _ in range(4)]
        made_room_by = time.monotonic() + 10
        while gw.metric(CLOSED, reason="evicted") == evicted_before:
            assert time.monotonic() < made_room_by, "no connection was closed to make room"
            time.sleep(0.05)
        second = read_http(s, timeout=30)
        assert status_of(second) == 200, second
        assert b'"content"' in second
        # the one closed to make room was an idle one (the first of the four)
        assert read_answer(fillers[0], timeout=5) == b""
    finally:
        up_a.reset()


def test_pipelined_requests_each_find_the_one_before_accounted(
        start_gateway: Callable[..., Gateway]) -> None:
    """A key allowed one request at a time, three requests sent in one write: each starts when
    the one before it is answered — and its accounting (the quota's settle, which frees the
    one concurrent request) is done before the next begins, though it runs after the answer
    is written. Run the other way round, the second would be refused 429 every time."""
    gw = start_gateway({"server": FAST, "identity": {"require_key": True},
                        "tiers": {"one": {"limits": {"concurrent_requests": 1}}}})
    cli(gw.config_path, "orgs", "create", "org-one")
    cli(gw.config_path, "projects", "create", "org-one/app")
    key = cli(gw.config_path, "keys", "create", "org-one/app", "--tier", "one").strip()
    body = json.dumps({"model": "demo", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + key.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for _ in range(5):
        s = dial(gw, "127.0.0.3")
        send_all(s, request * 3)
        answers = [read_http(s, timeout=30) for _ in range(3)]
        assert [status_of(a) for a in answers] == [200, 200, 200], answers
        s.close()


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("VmRSS:"))


def test_a_huge_stream_read_whole_is_relayed_in_bounded_memory_and_counted(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """200,000 tokens streamed by a backend that reports no usage (~34 MB of events), read
    whole by the client: the gateway holds a bounded window of the events it passes on
    (gatehouse/upstream/sse.py: RAW_LIMIT bytes of events before their text is taken out, at
    most KEEP_PIECES pieces of text kept for counting), so its memory stops growing once those
    are full — the second half of the stream adds nothing to the first half's peak — and the
    answer is counted with the model's tokenizer ("words": one token per word): exactly for
    the first 65,536 pieces, the rest estimated from their length (docs/configuration.md)."""
    words = 200_000
    gw = start_gateway({
        "upstreams": {"a": {"base_url": up_a.url + "/v1"}},
        "models": {"m": {"backends": [{"upstream": "a", "model": "m"}], "tokenizer": "words"}}})
    up_a.control(reply_tokens=words, omit_usage=True)
    try:
        rss_before = rss_of(gw.proc.pid)
        received = 0
        growth: list[tuple[int, int]] = []  # (bytes received, RSS added), every 2 MB
        body = {"model": "m", "stream": True, "max_tokens": words,
                "messages": [{"role": "user", "content": "go"}]}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body,
                          timeout=120) as r:
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            for chunk in r.iter_raw():
                received += len(chunk)
                if received // (2 << 20) != (received - len(chunk)) // (2 << 20):
                    growth.append((received, rss_of(gw.proc.pid) - rss_before))
        assert received > 30 << 20, received  # the whole answer went through
        record = gw.record(request_id, timeout=15)
        assert (record["status"], record["usage_counted_by"]) == (200, "gateway"), record
        assert 0.9 * words <= record["completion_tokens"] <= 1.15 * words, record
        first = max(added for at, added in growth if at <= received // 2)
        second = max(added for at, added in growth if at > received // 2)
        assert second - first < 3 << 20, growth  # flat: bounded, not growing with the stream
        assert second < 20 << 20, growth
    finally:
        up_a.reset()
