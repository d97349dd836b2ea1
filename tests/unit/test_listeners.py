"""A worker's own listening socket (gatehouse/edge/listeners.py): made where it is unpickled,
in one SO_REUSEPORT group with its siblings, the kernel spreading connections over them."""

from __future__ import annotations

import pickle
import socket
from collections import Counter

import pytest

from gatehouse.edge.listeners import AVAILABLE, WorkerListener, bind_reuse_port


def test_this_platform_spreads_connections() -> None:
    assert AVAILABLE  # Linux: what the gateway is deployed and tested on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_unpickled_listener_is_a_socket_of_its_own_and_connections_spread() -> None:
    port = free_port()
    held = bind_reuse_port("127.0.0.1", port)  # the supervisor's: bound, never listening
    stand_in = pickle.dumps(WorkerListener("127.0.0.1", port))
    workers = [pickle.loads(stand_in), pickle.loads(stand_in)]  # as two spawned workers do
    clients: list[socket.socket] = []
    try:
        assert all(isinstance(w, socket.socket) for w in workers)
        assert workers[0].fileno() != workers[1].fileno()
        for w in workers:
            assert w.getsockname() == ("127.0.0.1", port)
            w.listen(256)
            w.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5)
                   for _ in range(128)]
        accepted: Counter[int] = Counter()
        for i, w in enumerate(workers):
            while True:
                try:
                    conn, _ = w.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted[i] += 1
        # all of them reached a listening worker (none the held socket); spread by the
        # kernel's hash: 64 ± 5.7 each (σ); 40 is more than 4 σ away
        assert sum(accepted.values()) == 128
        assert min(accepted[0], accepted[1]) >= 40, accepted
        # nobody else takes the address meanwhile, with or without SO_REUSEPORT
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
    finally:
        for s in (*clients, *workers, held):
            s.close()


def test_a_taken_address_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            bind_reuse_port("127.0.0.1", taken.getsockname()[1])


def test_a_worker_that_cannot_bind_stops_as_failed_to_start(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Not a worker dying after it served (which uvicorn's supervisor restarts, here for
    ever): exit status 3, on which the supervisor stops."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stand_in = pickle.dumps(WorkerListener("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(SystemExit) as stopped:
            pickle.loads(stand_in)
    assert stopped.value.code == 3
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
