"""``--workers 2``: each worker listens on a socket of its own, in one SO_REUSEPORT group
(``[server] reuse_port``, gatehouse/edge/listeners.py), so a burst of keep-alive connections
is spread over the workers; with ``reuse_port = false`` they share one socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.support.procs import Gateway, Upstream
from tests.support.sockets import LISTEN, children, connections_per_process, holders

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
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    for conn in conns:
        conn.sendall(HEALTHZ)
    for conn in conns:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            assert chunk, "the gateway closed a connection"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
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
