"""Each worker's own listening socket (``--workers N`` on Linux), all of them in one
``SO_REUSEPORT`` group, so that the kernel spreads new connections over the workers.

uvicorn binds one socket in its supervisor, and every worker accepts from it. A worker takes
every connection waiting when it wakes (libuv accepts until none is left), so a burst of
keep-alive connections — an SDK's connection pool, a proxy's upstream keepalive — lands mostly
on one worker, and stays there: 64 connections opened at once split 57/7, 51/13, 42/22 between
two workers (measured), and the worker holding 7 of them idled while its sibling queued. With a
socket of its own per worker in a ``SO_REUSEPORT`` group, the kernel hashes each new connection
(by its addresses and ports) to one of them: 64 split about evenly (σ ≈ 4).

The trade-off (docs/deployment.md): a worker that exits drops the connections still waiting in
its own accept queue (the kernel resets them), where the shared socket kept them for the
others; ``[server] reuse_port = false`` brings the shared socket back. The supervisor holds a
bound socket of the group that never listens (so it is given no connections): the address
stays the gateway's while workers restart.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

AVAILABLE = sys.platform == "linux"  # elsewhere SO_REUSEPORT does not spread connections
STARTUP_FAILURE = 3  # the exit status uvicorn's supervisor reads as "cannot start" (no restart)


def _family(host: str) -> socket.AddressFamily:
    # as uvicorn binds (uvicorn.Config.bind_socket): an address with ":" is IPv6
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` in its SO_REUSEPORT group (not listening yet: the
    server listens on it with its own backlog)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def worker_socket(host: str, port: int) -> socket.socket:
    """A worker's own socket; if it cannot be bound, the worker stops as one that failed to
    start (uvicorn's supervisor then stops, instead of restarting it again and again)."""
    try:
        return bind_reuse_port(host, port)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr,
              flush=True)
        raise SystemExit(STARTUP_FAILURE) from None


class WorkerListener:
    """Stands for a worker's listening socket in the supervisor's list. uvicorn starts workers
    by spawning them, which pickles the list: each worker (and each one restarted) unpickles
    this into a socket of its own, bound there."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return worker_socket, (self.host, self.port)
