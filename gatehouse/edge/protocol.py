"""uvicorn's httptools protocol with the limits a front door needs (docs/security.md).

uvicorn parses with httptools (llhttp) and bounds none of this: a head may be any size (the
parser appends a long header's pieces, so one 64 MB header costs quadratic time), a
connection that sends half a head, or half a body, is kept for ever. Here, per connection:

- the request line, each header, the number of headers and the whole head are bounded
  (414 / 431, then close), counted as the bytes arrive — before the parser holds them;
- deadlines for the head and between body reads (408, then close; the sweep lives in
  :mod:`gatehouse.edge.connections`), and a cap on connections per address and in all;
- a deadline for an answer the client stops reading: an answer may wait on its client (writing
  paused, the client taking nothing) from a bucket of ``send_timeout`` seconds, drained while
  it waits and refilled by a second for every ``min_send_rate`` bytes the client takes, never
  above ``send_timeout`` — so a client that reads a few bytes now and then is cut too, and one
  reading steadily faster than that never is. The connection is cut and the app sees the
  client gone, so the request ends as ``client_disconnected`` and frees its slot and its
  upstream connection.

Refusals are written straight to the socket in OpenAI's error shape with a request id; no
stage runs for them, but each is recorded (``Connections.on_answer``: the telemetry stage) —
except a body that stops arriving while the app reads it, which the app records itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gatehouse.config import ServerSettings
from gatehouse.edge.connections import BODY, BUSY, WAITING, Connections
from gatehouse.edge.cork import CorkedTransport
from gatehouse.errors import (
    GatehouseError,
    HeadTooLarge,
    NotHttp,
    RequestTimeout,
    RequestTooLarge,
    UpgradeNotServed,
    UriTooLong,
)
from gatehouse.telemetry.ids import new_request_id

log = logging.getLogger("gatehouse.edge")


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal is on the protocol."""


def connections_of(app: Any, config: Config) -> Connections:
    """The app's registry (``Gateway.connections``), or one with the default limits."""
    found = getattr(app, "connections", None)
    if isinstance(found, Connections):
        return found
    own: Connections | None = getattr(config, "_gatehouse_connections", None)
    if own is None:
        own = Connections(ServerSettings())
        config._gatehouse_connections = own  # type: ignore[attr-defined]
    return own


# keys this layer adds to a request's ASGI scope (read by gatehouse/server.py)
REQUEST_ID = "gatehouse.request_id"
REFUSED = "gatehouse.refused"  # the error this layer answered while the app ran
# set by the app: called once, from the protocol, when the client goes before the answer is
# complete — instead of a task per request blocked on receive() for the disconnect. A scope
# that carries REQUEST_ID came through this protocol, which calls it.
ON_GONE = "gatehouse.on_gone"


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard = connections_of(self.app, config)
        s = guard.settings
        self.max_line = s.max_request_line_bytes
        self.max_header = s.max_header_bytes
        self.max_head = s.max_head_bytes
        self.max_headers = s.max_headers
        self.peer = ""
        self.deadline = 0.0
        self.phase = WAITING
        self.admitted = False
        self.refusal: GatehouseError | None = None
        self.raw = 0         # bytes of the next head: received since the last message ended
        self.begun = False   # the parser has begun a message (its head, at least a byte)
        self.line = 0        # request-line bytes seen by the parser
        self.head = 0        # head bytes seen by the parser
        self.count = 0       # headers seen
        self.payload = 0     # of that body, the payload (what a route would read)
        self.chunks = 0      # its chunks (framing: ~8 bytes each, extensions bounded by max_head)
        self.body_bytes = 0  # bytes received for the body being read (read by the app or not)
        # the seconds this answer may still wait on its client (the client not taking what
        # is sent): a bucket of send_timeout, drained by waiting, refilled by a second for
        # every min_send_rate bytes the client takes, never above send_timeout — so a client
        # taking a little now and then (a "trickle" reader) cannot hold an answer, its
        # admission slot and its upstream connection for ever, nor one that read fast first
        self.budget = guard.send_timeout
        self.paused_at = 0.0
        self.sent_at_pause = 0  # what the client had taken when writing last paused
        self.send_deadline = 0.0  # while writing is paused (the sweep's "stuck" group)
        # the answers not yet complete when a pipelined request's head arrived (running or
        # queued): uvicorn then points self.cycle at the new request, and tells only that one
        # when the connection is lost
        # (in the order they came: they complete in that order, so the oldest leave first)
        self.behind: deque[Any] = deque()
        self.sent_seen = 0  # bytes passed on when the send deadline was last set
        self.upgraded = False  # an upgrade's head was read: nothing after it is HTTP
        # a refusal of a request pipelined behind answers still to complete: written after
        # them (answers go in order), with the refused request (None: only its head came)
        # and its method and path for the record; what the client sends meanwhile is dropped
        self.held: tuple[GatehouseError, Any, tuple[str, str]] | None = None
        self.dropped = 0

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # an answer's head and body in one write (edge/cork.py); flow control keeps the
        # real transport
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        self.peer = self.client[0] if self.client else ""
        refusal = self.guard.admit(self)
        if refusal is not None:
            self._refuse(refusal)
            return
        self.admitted = True
        self.deadline = self.loop.time() + self.guard.head_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.admitted = False
            self.guard.release(self)
        behind, self.behind = self.behind, deque()
        for cycle in behind:
            # the answer in flight hears that its client is gone (or it would go on relaying
            # its upstream's answer into a closed connection, holding its slot, to the end);
            # one queued behind it is never started
            _gone(cycle)
        if self.cycle is not None:
            _gone(self.cycle)  # (uvicorn marks it too, but does not call the app's hook)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.upgraded or self.held is not None:
            # nothing after an upgrade's head or a refused request is read as HTTP (the
            # connection closes after the answers due): dropped — and not for ever: past the
            # head limit, the connection is cut
            self.dropped += len(data)
            if self.dropped > self.max_head:
                self._close()
            return
        self._unset_keepalive_if_required()
        phase = self.phase
        if phase == WAITING:
            if self.deadline == 0.0:  # the first byte of a head after a keep-alive pause
                self.deadline = self.loop.time() + self.guard.head_timeout
            self.raw += len(data)
        elif phase == BUSY:  # the next head, pipelined while an answer is made: bounded too
            self.raw += len(data)  # (one endless header was kept by the parser meanwhile)
        elif phase == BODY:
            self.deadline = self.loop.time() + self.guard.body_timeout
            # a body is bounded whether or not the app reads it: uvicorn drops one that comes
            # after its answer, and a GET's is read away (gatehouse/server.py) — either was
            # read for as long as the client sent, gigabytes a minute of one worker's loop.
            # Counted as it arrives: the payload against the largest body a route reads, the
            # framing beyond ~16 bytes a chunk against the head limit (endless chunk extensions
            # carry almost no payload) — checked after parsing, so a pipelined request that
            # follows in the same segment is not counted as this one's
            self.body_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the gateway serves no WebSocket nor any other upgrade (uvicorn runs with ws
            # "none"): the request is answered as the plain HTTP request it also is — through
            # the pipeline, so the edge's rules, bans and limits apply and it gets an id and a
            # record (an app that accepted no WebSocket was uvicorn's 500 and an ERROR line
            # per request, with no stage run) — and the connection closes after the answer:
            # what follows an upgrade's head is not HTTP: not read as HTTP, in this segment
            # or a later one (fed to the parser, it was a 400 written in the answer's place)
            self.upgraded = True
            if declares_body(self.headers):  # stopped at the head: its body reads as empty
                self._refuse(UpgradeNotServed(
                    "This gateway does not switch protocols, and a request that asks to "
                    "(Upgrade: h2c or websocket) cannot have its body read. Send it without "
                    "the Upgrade header.", cause="upgrade_with_body"), of_last=True)
                return
            if self.cycle is not None:
                self.cycle.keep_alive = False
            return
        except httptools.HttpParserError:
            if self.refusal is not None:
                self._refuse(self.refusal)
                return
            # answered in the error shape with a request id, and recorded like a 414 or 431
            # (uvicorn's own answer was plain text, with neither)
            log.debug("invalid HTTP from %s", self.peer)
            self._refuse(NotHttp("The request is not valid HTTP/1.1, so it was not read.",
                                 cause="invalid_http"))
            return
        if self.phase == BODY and (self.payload > self.guard.max_body or
                                   self.body_bytes - self.payload > self.max_head + 16 * self.chunks):
            self._refuse(RequestTooLarge(
                f"The request body is over {self.guard.max_body:,} bytes, more than this "
                "gateway accepts.", cause="body_too_large"))
            return
        if self.phase != BODY and self.raw > self.max_head:
            # a head still incomplete past the limit: refuse before the parser keeps more
            self._refuse(HeadTooLarge(f"The request head is larger than {self.max_head} "
                                      "bytes.", cause="head_too_large"))

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.line = self.head = self.count = 0
        self.begun = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self.line += len(url)
        if self.line > self.max_line:
            self._stop(UriTooLong(f"The request line is longer than {self.max_line} bytes.",
                                  cause="uri_too_long"))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self.count += 1
        self.head += size + 4
        if size > self.max_header:
            self._stop(HeadTooLarge(f"A request header is larger than {self.max_header} "
                                    "bytes.", cause="head_too_large"))
        if self.count > self.max_headers:
            self._stop(HeadTooLarge(f"The request has more than {self.max_headers} headers.",
                                    cause="head_too_large"))
        if self.head + self.line > self.max_head:
            self._stop(HeadTooLarge(f"The request head is larger than {self.max_head} bytes.",
                                    cause="head_too_large"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # the request's id, made here so that an answer this layer gives while the app runs
        # (a body that stops arriving: 408) carries the id the app records it under
        cast(dict[str, Any], self.scope)[REQUEST_ID] = new_request_id()
        self.phase = BODY
        self.deadline = self.loop.time() + self.guard.body_timeout
        self.guard.to_body(self)
        running = self.cycle
        super().on_headers_complete()
        if running is not None and not running.response_complete and running is not self.cycle:
            behind = self.behind
            while behind and behind[0].response_complete:  # not a scan per request: a flood
                behind.popleft()  # of pipelined requests in one write made it quadratic
            behind.append(running)

    def on_body(self, body: bytes) -> None:
        self.payload += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self.chunks += 1

    def on_message_complete(self) -> None:
        self.body_bytes = self.payload = self.chunks = self.line = self.raw = 0
        self.begun = False
        self._be_busy()
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline and \
                not self.transport.is_closing():
            # answered before its body had all come (a 401 before the body is read): its
            # on_response_complete found the body still arriving and left the phase alone —
            # the connection waits for the next head now, with the head's limits and deadline
            # (from now: the next head may have come in the same segment as the body's end)
            self._wait_for_head(self.loop.time() + self.guard.head_timeout)

    def on_response_complete(self) -> None:
        # a complete answer goes to the socket now, not at the end of the loop's turn: the
        # app runs its accounting (the stages' exits) right after, and the client should
        # not wait for that (gatehouse/server.py)
        cast(CorkedTransport, self.transport).flush()
        self.budget = self.guard.send_timeout  # the next answer has its own
        held = self.held
        if held is not None:
            if not self._answers_due(held[1]):  # the last answer before the refusal's
                if not self.transport.is_closing():  # (that answer closed: it cannot be)
                    self._answer(*held)
                self._close()
            super().on_response_complete()  # (closing: starts nothing; else the next)
            return
        # uvicorn starts a pipelined request here (popping it): whether one waited must be
        # known before, or the connection running it would be taken for an idle one (and
        # could be evicted to make room for a new connection)
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if self.transport.is_closing() or pipelined or self.phase != BUSY:
            return  # closing, or the next request (pipelined) is already read or reading
        if self.begun:  # a head begun while the answer was made: due from now (a blank
            # line between requests begins none: RFC 9112 §2.2 — ignored, not a slow head)
            self._unset_keepalive_if_required()  # (not an idle connection)
            self._wait_for_head(self.loop.time() + self.guard.head_timeout)
        else:
            self._wait_for_head(0.0)  # uvicorn's keep-alive timer governs the idle wait

    def _be_busy(self) -> None:
        """No head nor body to read on time: an answer is being made."""
        self.phase = BUSY
        self.deadline = 0.0
        self.guard.to_busy(self)

    def _wait_for_head(self, deadline: float) -> None:
        """The request is over: the connection waits for the next head (its limits, and
        ``deadline`` — 0: none until its first byte). ``raw`` counts from the message's end."""
        self.phase = WAITING
        self.deadline = deadline
        self.guard.to_waiting(self)

    # -- what the registry calls -----------------------------------------------------------
    def send_expire(self) -> None:
        """Writing has stayed paused until the send deadline: if the client took something
        since that deadline was set and the answer's waits have time left, wait on (so a
        client reading steadily faster than min_send_rate is never cut, however long one
        wait for a large write lasts); else cut — nobody can be told. Also when the
        connection is closing: a close waits for the buffer to drain, for ever."""
        if not self.flow.write_paused:
            return
        now = self.loop.time()
        sent = cast(CorkedTransport, self.transport).sent()
        left = self._budget_at(now, sent)
        if sent > self.sent_seen and left > 0:
            self.sent_seen = sent
            self.send_deadline = now + min(self.guard.send_timeout, left)
            return
        self.guard.unstuck(self)
        self.guard.slow(self, "send_timeout")
        self._close(abort=True)

    def _budget_at(self, now: float, sent: int) -> float:
        """The bucket now: drained by this wait so far, refilled by what the client took
        during it (acknowledged bytes, at min_send_rate), capped at send_timeout."""
        refill = (sent - self.sent_at_pause) / self.guard.min_send_rate
        return min(self.guard.send_timeout, self.budget - (now - self.paused_at) + refill)

    def expire(self) -> None:
        if self.transport.is_closing() or self.held is not None:
            return
        if self.phase == BODY:
            if self.flow.read_paused:  # the app is not reading: not the client's fault
                self.deadline = self.loop.time() + self.guard.body_timeout
                return
            self.guard.slow(self, "body_timeout")
            self._refuse(RequestTimeout(f"The request body stopped arriving for "
                                        f"{self.guard.body_timeout:g} s.",
                                        cause="body_timeout"), counted=True)
        elif self.begun:  # (blank lines alone begin no head: closed as idle, not a 408)
            self.guard.slow(self, "head_timeout")
            self._refuse(RequestTimeout(f"The request head did not arrive within "
                                        f"{self.guard.head_timeout:g} s.",
                                        cause="head_timeout"), counted=True)
        else:  # never sent a byte (a browser's preconnect, or a slowloris): just close
            self.guard.refused("idle_timeout")
            self._close()

    def evict(self) -> None:
        self._close()

    # -- flow control: the transport's buffer above / back under its high-water mark -------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self.admitted:
            self.paused_at = now = self.loop.time()
            self.sent_at_pause = self.sent_seen = cast(CorkedTransport, self.transport).sent()
            # what is left of the bucket (at once, when nothing is)
            self.send_deadline = now + max(self.budget, 1e-6)
            self.guard.to_stuck(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.admitted:
            self.budget = self._budget_at(self.loop.time(),
                                          cast(CorkedTransport, self.transport).sent())
            self.send_deadline = 0.0
            self.guard.unstuck(self)

    # -- answers ---------------------------------------------------------------------------
    def _stop(self, error: GatehouseError) -> None:
        self.refusal = error
        raise _Refused

    def _refuse(self, error: GatehouseError, *, counted: bool = False,
                of_last: bool = False) -> None:
        """Answer ``error`` without the app and close (nothing is read after this) — after
        the answers to earlier requests on the connection, when some are still to come.
        ``of_last``: it refuses the request whose head was read last, its body read or not."""
        if not counted and error.cause:
            self.guard.refused(error.cause)
        if self.transport.is_closing():
            return
        # the request refused: the one whose body is read; None when only its head came
        # (self.cycle is then an earlier request's, if any)
        of = self.cycle if self.phase == BODY or of_last else None
        line = self._request_line(of)
        if self._answers_due(of):
            # pipelined behind answers still running or queued: a client reads answers in
            # order, so this one written now would be taken for theirs (and they were cut)
            # (out of the head and body sweeps: the wait is bounded by those answers' own
            # limits, what the client sends meanwhile by data_received)
            self.held = (error, of, line)
            self._be_busy()
            return
        self._answer(error, of, line)
        self._close()

    def _answers_due(self, of: Any) -> bool:
        """Whether an answer to a request before ``of`` (or before a head being read, for
        None) is still to complete on this connection."""
        cycle = self.cycle
        if cycle is not None and cycle is not of and not cycle.response_complete:
            return True
        return any(not c.response_complete for c in self.behind if c is not of)

    def _answer(self, error: GatehouseError, of: Any, line: tuple[str, str]) -> None:
        """Write the refusal of request ``of`` (None: a head) and record it, unless that
        request's own app records it — or was answered already (a 401 before its body had
        all come): then nothing is written."""
        if of is not None and of.response_started:
            return
        if of is None:
            request_id, in_app = new_request_id(), False
        else:
            scope = cast(dict[str, Any], of.scope)
            request_id = str(scope.get(REQUEST_ID) or new_request_id())
            # its app is running (reading the body): it records this answer, not 499
            in_app = not any(queued is of for queued, _ in self.pipeline)
            if in_app:
                scope[REFUSED] = error
        body = error.body(request_id)
        lines = [STATUS_LINE[error.status], b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body),
                 b"x-request-id: " + request_id.encode() + b"\r\n"]
        for name, value in error.response_headers().items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines += [b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(lines))
        record = self.guard.on_answer
        if record is not None and not in_app:
            record(error, request_id, self.peer, *line)

    def _request_line(self, of: Any) -> tuple[str, str]:
        """The method and path of the request refused, as far as they arrived."""
        if of is not None:
            return str(of.scope.get("method", "")), str(of.scope.get("path", ""))[:512]
        if self.line == 0:
            return "", ""
        try:
            method = self.parser.get_method().decode("ascii", "replace")
        except httptools.HttpParserError:
            method = ""
        path = self.url.split(b"?", 1)[0][:512].decode("latin-1")
        return method, path

    def _close(self, *, abort: bool = False) -> None:
        if self.cycle is not None:
            _gone(self.cycle)  # the app, if it runs, reads a disconnect; its answer goes nowhere
        if abort:  # drop what waits to be written (close would wait for it to drain)
            self.transport.abort()
        else:
            self.transport.close()


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's head declares a body (a non-zero Content-Length, or
    Transfer-Encoding; RFC 9112 §6.3) — ASGI's header list, or the parser's."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or name == b"content-length" and value.strip() != b"0":
            return True
    return False


def _gone(cycle: Any) -> None:
    """An answer not yet complete learns that its client is gone (the app reads a
    disconnect); a complete one needs nothing."""
    if not cycle.response_complete:
        cycle.disconnected = True
        cycle.message_event.set()
        hook = cycle.scope.pop(ON_GONE, None)
        if hook is not None:
            hook()
