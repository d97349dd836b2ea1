"""``--workers 2``: each worker listens on a socket of its own, in one SO_REUSEPORT group
(``[server] reuse_port``, gatehouse/edge/listeners.py), so a burst of keep-alive connections
is spread over the workers; with ``reuse_port = false`` they share one socket."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

from tests.support.procs import Gateway, Upstream
from tests.support.sockets import (
    LISTEN,
    children,
    connections_per_process,
    holders,
    listening,
)

CONNECTIONS = 64
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\n\r\n"


def listeners(gw: Gateway, workers: int, timeout: float = 60) -> dict[int, set[str]]:
    """Worker pid → the inodes of its listening sockets, once ``workers`` of them listen (a
    worker listens after its start-up: the app, the store, the tokenizers)."""
    deadline = time.monotonic() + timeout
    while True:
        held = {pid: inodes for pid, inodes in
                holders(children(gw.proc.pid), gw.port, LISTEN).items() if inodes}
        if len(held) >= workers or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def answered_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections opened one after the other, as fast as they go (a client's pool
    filling up), each answered once and kept open."""
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for conn in conns:
            conn.sendall(HEALTHZ)
        for conn in conns:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                assert chunk, "the gateway closed a connection"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


def start(start_gateway: Callable[..., Gateway], up_a: Upstream, **server: object) -> Gateway:
    return start_gateway({"server": server,
                          "upstreams": {"a": {"base_url": up_a.url + "/v1"}},
                          "models": {"m": {"backends": ["a"]}}}, workers=2, start_timeout=60)


def test_keep_alive_connections_are_spread_over_the_workers(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """With one shared socket, the first worker to wake took every connection waiting:
    64 opened at once split 57/7, 51/13, 42/22 — the worker holding 7 idled while the other
    queued. Now the kernel hashes each to a worker's own socket (64 ± 4 per two workers)."""
    gw = start(start_gateway, up_a)
    held = listeners(gw, 2)
    assert len(held) == 2, held
    first, second = held.values()
    assert first.isdisjoint(second), "each worker listens on a socket of its own"
    conns = answered_connections(gw.port, CONNECTIONS)
    try:
        per_worker = connections_per_process(list(held), gw.port)
        assert sum(per_worker.values()) == CONNECTIONS, per_worker
        # 32 ± 4 (σ) each: fewer than 16 is 4 σ away
        assert min(per_worker.values()) >= 16, per_worker
    finally:
        for conn in conns:
            conn.close()


def test_reuse_port_false_shares_one_socket(start_gateway: Callable[..., Gateway],
                                            up_a: Upstream) -> None:
    gw = start(start_gateway, up_a, reuse_port=False)
    held = listeners(gw, 2)
    assert len(held) == 2, held
    first, second = held.values()
    assert first == second, "both workers accept from the supervisor's one socket"
    for conn in answered_connections(gw.port, 4):
        conn.close()


def test_a_worker_killed_is_replaced_and_joins_the_group(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """The supervisor starts another worker for one that died; the new one binds a socket of
    its own in the same group (the supervisor held the address meanwhile), and connections are
    spread over both again. While it starts, the surviving worker's socket takes them all."""
    gw = start(start_gateway, up_a)
    held = listeners(gw, 2)
    assert len(held) == 2, held
    victim, survivor = held
    os.kill(victim, signal.SIGKILL)
    # until its socket is closed, a connection hashed to it is reset (the trade-off,
    # docs/deployment.md); then the survivor takes every one
    deadline = time.monotonic() + 10
    while held[victim] & listening(gw.port) and time.monotonic() < deadline:
        time.sleep(0.01)
    for conn in answered_connections(gw.port, 8):
        conn.close()
    deadline = time.monotonic() + 60
    while True:
        now = listeners(gw, 2, timeout=1)
        if len(now) == 2 and victim not in now or time.monotonic() > deadline:
            break
    assert len(now) == 2 and victim not in now and survivor in now, now
    first, second = now.values()
    assert first.isdisjoint(second)
    conns = answered_connections(gw.port, CONNECTIONS)
    try:
        per_worker = connections_per_process(list(now), gw.port)
        assert sum(per_worker.values()) == CONNECTIONS and min(per_worker.values()) >= 16, \
            per_worker
    finally:
        for conn in conns:
            conn.close()
