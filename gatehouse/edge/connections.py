"""Every open client connection of one worker: caps per address and in all, and deadlines
for slow clients (docs/security.md).

A connection is, at any moment, in one of three phases:

    waiting ──(head complete)──► body ──(body complete)──► busy ──(answer sent)──► waiting
     head_timeout from its        body_timeout between       the app's own timeouts
     first byte (a new            reads (not while the       bound it; send_timeout
     connection's too)            app is not reading)        while the client does
                                                             not read what it is sent

A sweep every ``tick`` seconds closes the connections whose deadline has passed — a timer
per request would cost more on the hot path than a few dict operations and one sweep. When
every connection the worker may hold is in use, the one that has waited longest for a
request head is closed to make room (an idle keep-alive connection or a slowloris), so a
flood of slow connections from many addresses cannot lock well-behaved clients out.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Protocol

from gatehouse.config import ServerSettings
from gatehouse.errors import GatehouseError, ServerBusy, TooManyConnections
from gatehouse.telemetry.metrics import Metrics

WAITING, BODY, BUSY = 0, 1, 2
AUTO_CAP = 16384  # connections per worker when [server] max_connections = 0


class Conn(Protocol):
    """What the registry needs of a connection (gatehouse/edge/protocol.py)."""

    peer: str
    deadline: float  # loop time; 0 = none
    send_deadline: float  # while the client takes nothing of what is sent; 0 = none

    def expire(self) -> None:
        """Its deadline passed: answer 408 where a request was under way, and close."""

    def send_expire(self) -> None:
        """Its send deadline passed: give more time if the client made progress (and has
        time left), else cut it."""

    def evict(self) -> None:
        """Close it to make room for a new connection."""


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> int:
    """Lift the soft file-descriptor limit to the hard one (as nginx's worker_rlimit_nofile
    does): Debian's default soft limit of 1,024 is a few hundred slow clients away."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def connection_cap(settings: ServerSettings, fds: int | None = None) -> int:
    """The worker's connection cap: the setting, or half the descriptors (the other half for
    upstream connections, the store and files), at most AUTO_CAP."""
    if settings.max_connections:
        return settings.max_connections
    return max(64, min(AUTO_CAP, (fd_limit() if fds is None else fds) // 2))


class Connections:
    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None, *,
                 is_proxy: Callable[[str], bool] = lambda peer: False,
                 on_slow: Callable[[str], None] = lambda peer: None,
                 fds: int | None = None, max_body: int | None = None) -> None:
        # told of each answer made here, without the app: (error, request id, peer, method,
        # path) — the telemetry stage records it (set by the app)
        self.on_answer: Callable[[GatehouseError, str, str, str, str], None] | None = None
        self.settings = settings
        self.metrics = metrics
        self.is_proxy = is_proxy
        self.on_slow = on_slow
        self.cap = connection_cap(settings, fds)
        self.per_address_cap = settings.max_connections_per_address
        self.head_timeout = settings.head_timeout
        self.body_timeout = settings.body_timeout
        self.send_timeout = settings.send_timeout
        self.min_send_rate = settings.min_send_rate
        # the most body bytes one request may send: the largest body any route reads (the
        # app's limits answer first where they are lower); past it, 413 or a close — so a
        # body nobody reads (a GET's, or one sent on after its answer) is not read for ever
        self.max_body = settings.max_body_bytes if max_body is None else max_body
        self.tick = min(1.0, settings.head_timeout / 4, settings.body_timeout / 4,
                        settings.send_timeout / 4)
        self.per_address: dict[str, int] = {}
        # insertion-ordered: the oldest waiting connection is evicted first
        self.waiting: dict[Conn, None] = {}
        self.reading: dict[Conn, None] = {}
        self.stuck: dict[Conn, None] = {}  # writing paused: the client reads nothing
        self.open = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- life of a connection --------------------------------------------------------------
    def admit(self, conn: Conn) -> GatehouseError | None:
        """Count a new connection in, or say why it is refused."""
        peer = conn.peer
        count = self.per_address.get(peer, 0)
        if count >= self.per_address_cap and not self.is_proxy(peer):
            self._count("per_address")
            return TooManyConnections(
                f"Too many connections from your address ({self.per_address_cap} are open). "
                "Reuse connections or open fewer at once.", retry_after=1)
        if self.open >= self.cap and not self._evict_one():
            self._count("server_full")
            return ServerBusy("Every connection this server can hold is in use. Retry soon.",
                              retry_after=1)
        self.per_address[peer] = count + 1
        self.open += 1
        self.waiting[conn] = None
        if self.metrics is not None:
            self.metrics.connections_open.inc()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._sweep)
        return None

    def release(self, conn: Conn) -> None:
        peer = conn.peer
        left = self.per_address.get(peer, 1) - 1
        if left > 0:
            self.per_address[peer] = left
        else:
            self.per_address.pop(peer, None)
        self.open -= 1
        self.waiting.pop(conn, None)
        self.reading.pop(conn, None)
        self.stuck.pop(conn, None)
        if self.metrics is not None:
            self.metrics.connections_open.dec()

    def to_body(self, conn: Conn) -> None:
        self.waiting.pop(conn, None)
        self.reading[conn] = None

    def to_busy(self, conn: Conn) -> None:
        self.waiting.pop(conn, None)
        self.reading.pop(conn, None)

    def to_waiting(self, conn: Conn) -> None:
        self.reading.pop(conn, None)
        self.waiting[conn] = None

    def to_stuck(self, conn: Conn) -> None:
        """The client stopped taking what ``conn`` sends (its buffers are full)."""
        self.stuck[conn] = None

    def unstuck(self, conn: Conn) -> None:
        self.stuck.pop(conn, None)

    def slow(self, conn: Conn, reason: str) -> None:
        """``conn`` was cut for a head or body that did not arrive in time, or an answer
        not read in time."""
        self._count(reason)
        self.on_slow(conn.peer)

    def refused(self, reason: str) -> None:
        self._count(reason)

    # -- the sweep -------------------------------------------------------------------------
    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for group in (self.waiting, self.reading):
            expired = [c for c in group if 0 < c.deadline <= now]
            for conn in expired:
                conn.deadline = 0.0
                conn.expire()
        # (a deadline of their own: a request read meanwhile on the connection, pipelined or
        # kept alive, sets and clears the phase's deadline, not this one)
        for conn in [c for c in self.stuck if 0 < c.send_deadline <= now]:
            conn.send_deadline = 0.0
            conn.send_expire()
        self._timer = loop.call_later(self.tick, self._sweep) if self.open > 0 else None

    def _evict_one(self) -> bool:
        for conn in self.waiting:
            self.waiting.pop(conn)
            self._count("evicted")
            conn.evict()
            return True
        return False

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_closed.labels(reason).inc()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
