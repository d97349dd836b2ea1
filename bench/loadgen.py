"""A small, fast HTTP/1.1 load generator for the overhead benchmark.

Everything is callback-driven (asyncio Protocols on uvloop, responses parsed by httptools'
C parser, requests pre-encoded once), so one client process can drive ~10k req/s on one
core and is not what limits a gateway measured on the same two-core machine.

Two modes:

* ``open_loop``: a fixed arrival rate. Request *i* is *scheduled* at ``t0 + i / rate``,
  whatever happened to earlier ones; its latency runs from its scheduled time to the last
  byte of the response, so a server that falls behind is charged for the queueing it
  causes (no coordinated omission). New keep-alive connections are opened as needed, up
  to ``max_conns``; past that, requests wait in a client-side backlog (still timed from
  their scheduled time).
* ``closed_loop``: ``conns`` keep-alive connections, each sending its next request the
  moment the previous response ends, for a fixed time: the maximum sustained rate.

Only loopback addresses are accepted. Every run is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson

now = time.perf_counter

_SEND_SLACK = 0.0005  # send up to 0.5 ms early (timers have ~1 ms resolution); see Result


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing to send load to non-loopback address {host!r}")


def chat_request(host: str, port: int, *, api_key: str, stream: bool,
                 model: str = "m", path: str = "/v1/chat/completions",
                 content: str = "Say hello to the benchmark, please.") -> bytes:
    """One pre-encoded HTTP/1.1 keep-alive request for a small chat completion (of a short
    prompt unless ``content`` is given)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return post_request(host, port, path, body, api_key=api_key, stream=stream)


def responses_request(host: str, port: int, *, api_key: str, stream: bool,
                      model: str = "m") -> bytes:
    """The same small question as :func:`chat_request`, for ``POST /v1/responses``."""
    body: dict[str, Any] = {"model": model, "input": "Say hello to the benchmark, please.",
                            "max_output_tokens": 16}
    if stream:
        body["stream"] = True
    return post_request(host, port, "/v1/responses", body, api_key=api_key, stream=stream)


def post_request(host: str, port: int, path: str, body: dict[str, Any], *, api_key: str,
                 stream: bool) -> bytes:
    """One pre-encoded HTTP/1.1 keep-alive POST of ``body`` as JSON."""
    data = orjson.dumps(body)
    head = (f"POST {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\n"
            f"Content-Type: application/json\r\n"
            f"Accept: {'text/event-stream' if stream else 'application/json'}\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"\r\n")
    return head.encode() + data


@dataclass
class Result:
    """Per-request timings of one run (seconds, perf_counter clock).

    ``latency`` is last byte minus the request's start, where start is its scheduled time,
    or its actual send time when the client sent it up to 0.5 ms early (the timer slack),
    i.e. ``min(scheduled, sent)``: lateness of the client is charged, earliness is not
    credited.
    """

    mode: str
    offered_rate: float | None
    duration: float
    latencies: list[float] = field(default_factory=list)  # measured, completed, OK
    ttft: list[float] = field(default_factory=list)  # first body byte (streams)
    send_lag: list[float] = field(default_factory=list)  # actual send - scheduled
    completed: int = 0
    errors: int = 0
    timeouts: int = 0  # measured requests still unanswered at the deadline
    censored: list[float] = field(default_factory=list)  # their waits so far (lower bounds)
    conns_opened: int = 0
    total: int = 0  # requests sent over the whole run, warm-up included
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return self.completed / self.duration if self.duration else 0.0

    def percentile(self, q: float, *, which: str = "latency") -> float:
        """Nearest-rank percentile; timeouts count as (lower-bound) latencies."""
        values = self.latencies if which == "latency" else self.ttft
        if which == "latency" and self.censored:
            values = values + self.censored
        if not values:
            return math.nan
        ordered = sorted(values)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def queue_growing(self) -> bool:
        """Latency climbs through the run (last quarter's median far above the first's):
        the server takes requests in more slowly than they come, so a queue builds."""
        n = len(self.latencies)
        if n < 20:
            return False
        first = sorted(self.latencies[: n // 4])[n // 8]
        last = sorted(self.latencies[-(n // 4):])[n // 8]
        return last > 2 * first + 0.005

    @property
    def saturated(self) -> bool:
        if self.offered_rate is None:
            return False
        wanted = self.offered_rate * self.duration
        return bool(self.timeouts) or self.completed < 0.97 * wanted or self.queue_growing


class _Conn(asyncio.Protocol):
    __slots__ = ("busy", "closed", "first", "gen", "idx", "keep_alive", "parser", "sent",
                 "start", "status", "transport")

    def __init__(self, gen: _Gen) -> None:
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idx = -1
        self.sent = 0.0
        self.start = 0.0
        self.first = 0.0
        self.status = 0
        self.busy = False
        self.closed = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP from server: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy:
            self._fail(f"connection lost mid-request: {exc!r}")
        self.gen.conn_gone(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if not self.first:
            self.first = now()

    def on_message_complete(self) -> None:
        end = now()
        self.busy = False
        idx, self.idx = self.idx, -1
        ok = self.status == self.gen.expect
        first = self.first or end
        self.first = 0.0
        if not self.keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self.gen.done(self, idx, ok, end, first, f"HTTP {self.status}")

    # helpers
    def send(self, idx: int, start: float) -> None:
        self.busy = True
        self.idx = idx
        self.status = 0
        self.first = 0.0
        self.start = start
        self.sent = now()
        assert self.transport is not None
        self.transport.write(self.gen.request)

    def _fail(self, why: str) -> None:
        if not self.busy:
            return
        self.busy = False
        idx, self.idx = self.idx, -1
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.gen.done(self, idx, False, now(), 0.0, why)


class _Gen:
    """Shared state of one run."""

    conn_type: type[_Conn] = _Conn  # a subclass may send per-connection variants

    def __init__(self, host: str, port: int, request: bytes) -> None:
        _check_loopback(host)
        self.host = host
        self.port = port
        self.request = request
        self.loop = asyncio.get_running_loop()
        self.conns: set[_Conn] = set()
        self.idle: deque[_Conn] = deque()
        self.connecting = 0
        self.opened = 0
        self.finished = asyncio.Event()
        self.expect = 200  # the status that counts as completed (403 to measure refusals)

    async def connect(self) -> _Conn:
        self.connecting += 1
        try:
            _, proto = await self.loop.create_connection(lambda: self.conn_type(self), self.host,
                                                         self.port)
        finally:
            self.connecting -= 1
        self.opened += 1
        self.conns.add(proto)
        return proto

    def conn_gone(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def done(self, conn: _Conn, idx: int, ok: bool, end: float, first: float,
             why: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close_all(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        self.conns.clear()
        self.idle.clear()


class _OpenLoop(_Gen):
    def __init__(self, host: str, port: int, request: bytes, n: int, warm_n: int,
                 max_conns: int) -> None:
        super().__init__(host, port, request)
        self.n = n
        self.warm_n = warm_n
        self.max_conns = max_conns
        self.sched = [0.0] * n
        self.start = [0.0] * n
        self.sent = [0.0] * n
        self.end = [0.0] * n
        self.first = [0.0] * n
        self.state = bytearray(n)  # 0 pending, 1 ok, 2 error
        self.backlog: deque[int] = deque()
        self.outstanding = 0
        self.errors = 0
        self.first_error: str | None = None
        self.stopping = False

    def dispatch(self, idx: int) -> None:
        self.outstanding += 1
        if self.idle:
            conn = self.idle.pop()  # LIFO keeps a small hot set of connections
            self._send(conn, idx)
        elif len(self.conns) + self.connecting < self.max_conns:
            self.loop.create_task(self._connect_and_send(idx))
        else:
            self.backlog.append(idx)

    def _send(self, conn: _Conn, idx: int) -> None:
        sched = self.sched[idx]
        t = now()
        self.sent[idx] = t
        self.start[idx] = min(sched, t)
        conn.send(idx, self.start[idx])

    async def _connect_and_send(self, idx: int) -> None:
        try:
            conn = await self.connect()
        except OSError as exc:
            self._record(idx, False, now(), 0.0, f"connect failed: {exc!r}")
            return
        if self.stopping:
            conn.transport.abort()  # type: ignore[union-attr]
            return
        self._send(conn, idx)

    def _record(self, idx: int, ok: bool, end: float, first: float, why: str) -> None:
        if idx < 0 or self.state[idx]:
            return
        self.end[idx] = end
        self.first[idx] = first
        self.state[idx] = 1 if ok else 2
        if not ok:
            self.errors += 1
            if self.first_error is None:
                self.first_error = why
        self.outstanding -= 1
        if self.outstanding == 0 and self.stopping:
            self.finished.set()

    def done(self, conn: _Conn, idx: int, ok: bool, end: float, first: float,
             why: str) -> None:
        self._record(idx, ok, end, first, why)
        if conn.closed:
            self.conns.discard(conn)
            # a dropped connection: let a fresh one take the backlog
            if self.backlog and not self.stopping:
                self.loop.create_task(self._connect_and_send(self.backlog.popleft()))
            return
        if self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def conn_gone(self, conn: _Conn) -> None:
        super().conn_gone(conn)
        if self.backlog and not self.stopping:
            self.loop.create_task(self._connect_and_send(self.backlog.popleft()))


class _ClosedLoop(_Gen):
    def __init__(self, host: str, port: int, request: bytes, t_measure: float,
                 t_stop: float) -> None:
        super().__init__(host, port, request)
        self.t_measure = t_measure
        self.t_stop = t_stop
        self.counter = 0
        self.latencies: list[float] = []
        self.ttft: list[float] = []
        self.completed = 0
        self.errors = 0
        self.first_error: str | None = None
        self.active = 0

    def kick(self, conn: _Conn) -> None:
        self.active += 1
        self.counter += 1
        conn.send(self.counter, now())

    def done(self, conn: _Conn, idx: int, ok: bool, end: float, first: float,
             why: str) -> None:
        if self.t_measure <= end <= self.t_stop:
            if ok:
                self.completed += 1
                self.latencies.append(end - conn.start)
                self.ttft.append(first - conn.start)
            else:
                self.errors += 1
        if not ok and self.first_error is None:
            self.first_error = why
        self.active -= 1
        if end < self.t_stop and not conn.closed:
            self.kick(conn)
        elif end < self.t_stop:
            self.loop.create_task(self._reconnect())
        elif self.active == 0:
            self.finished.set()

    async def _reconnect(self) -> None:
        try:
            conn = await self.connect()
        except OSError:
            return
        if now() < self.t_stop:
            self.kick(conn)
        else:
            conn.transport.abort()  # type: ignore[union-attr]


async def _sleep_until(t: float) -> None:
    delay = t - now()
    if delay > 0:
        await asyncio.sleep(delay)


async def open_loop(host: str, port: int, request: bytes, *, rate: float, duration: float,
                    warmup: float = 1.0, max_conns: int = 256, prewarm: int = 8,
                    grace: float = 2.0) -> Result:
    """Send ``rate`` req/s for ``warmup + duration`` s; report the ``duration`` part.

    After the last scheduled send, waits at most ``grace`` s (plus the duration itself
    when the server is far behind, capped at 10 s) for answers; those still missing count
    as timeouts and their wait so far enters the percentiles as a lower bound.
    """
    warm_n = int(rate * warmup)
    n = warm_n + int(rate * duration)
    gen = _OpenLoop(host, port, request, n, warm_n, max_conns)
    gc.collect()
    gc.disable()
    try:
        conns = await asyncio.gather(*(gen.connect() for _ in range(prewarm)))
        gen.idle.extend(conns)
        t0 = now() + 0.01
        interval = 1.0 / rate
        for i in range(n):
            gen.sched[i] = t0 + i * interval
        i = 0
        while i < n:
            horizon = now() + _SEND_SLACK
            while i < n and gen.sched[i] <= horizon:
                gen.dispatch(i)
                i += 1
            if i < n:
                delay = gen.sched[i] - _SEND_SLACK - now()
                await asyncio.sleep(max(0.0, delay))
        gen.stopping = True
        t_last = gen.sched[-1]
        deadline = t_last + grace
        if gen.outstanding:
            try:
                await asyncio.wait_for(gen.finished.wait(), max(0.0, deadline - now()))
            except TimeoutError:
                pass
        t_cut = now()
    finally:
        gen.close_all()
        gc.enable()
    res = Result(mode="open", offered_rate=rate, duration=duration,
                 conns_opened=gen.opened, total=n, first_error=gen.first_error)
    for k in range(warm_n, n):
        state = gen.state[k]
        if state == 1:
            res.completed += 1
            res.latencies.append(gen.end[k] - gen.start[k])
            res.ttft.append(gen.first[k] - gen.start[k])
            res.send_lag.append(gen.sent[k] - gen.sched[k])
        elif state == 2:
            res.errors += 1
        else:
            res.timeouts += 1
            res.censored.append(t_cut - gen.sched[k])
    return res


async def closed_loop(host: str, port: int, request: bytes, *, conns: int = 64,
                      duration: float = 5.0, warmup: float = 1.0, expect: int = 200) -> Result:
    """``conns`` connections back to back for ``warmup + duration`` s; answers with status
    ``expect`` count as completed, others as errors."""
    t_start = now()
    gen = _ClosedLoop(host, port, request, t_start + warmup, t_start + warmup + duration)
    gen.expect = expect
    gc.collect()
    gc.disable()
    try:
        opened = await asyncio.gather(*(gen.connect() for _ in range(conns)))
        gen.t_measure = now() + warmup
        gen.t_stop = gen.t_measure + duration
        for conn in opened:
            gen.kick(conn)
        await _sleep_until(gen.t_stop)
        try:
            await asyncio.wait_for(gen.finished.wait(), 5.0)
        except TimeoutError:
            pass
    finally:
        gen.close_all()
        gc.enable()
    return Result(mode="closed", offered_rate=None, duration=duration,
                  latencies=gen.latencies, ttft=gen.ttft, completed=gen.completed,
                  errors=gen.errors, conns_opened=gen.opened, total=gen.counter,
                  first_error=gen.first_error)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a gatehouse dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
