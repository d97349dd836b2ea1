"""The connection registry's caps, phases and sweep (gatehouse/edge/connections.py), and the
linear header join (gatehouse/context.py). The whole layer against real sockets is in
tests/e2e/test_connections.py."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.config import ServerSettings
from gatehouse.context import header_dict
from gatehouse.edge.connections import AUTO_CAP, Connections, connection_cap
from gatehouse.errors import ServerBusy, TooManyConnections
from gatehouse.telemetry.metrics import Metrics


class FakeConn:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.deadline = 0.0
        self.expired = 0
        self.evicted = 0

    def expire(self) -> None:
        self.expired += 1

    def evict(self) -> None:
        self.evicted += 1


def closed(metrics: Metrics, reason: str) -> float:
    return metrics.connections_closed.labels(reason)._value.get()


def test_repeated_headers_are_joined_in_order() -> None:
    raw = [(b"X-A", b"1"), (b"accept", b"a"), (b"x-a", b"2"), (b"X-A", b"3")]
    assert header_dict(raw) == {"x-a": "1, 2, 3", "accept": "a"}
    assert header_dict([]) == {}


def test_a_flood_of_one_header_is_joined_in_linear_time() -> None:
    # 300,000 repeats: the old quadratic join took seconds; this must stay well under one
    raw = [(b"x-a", b"b")] * 300_000
    assert len(header_dict(raw)["x-a"]) == 3 * 300_000 - 2


def test_the_automatic_cap_follows_the_descriptor_limit() -> None:
    assert connection_cap(ServerSettings(), fds=1024) == 512
    assert connection_cap(ServerSettings(), fds=1 << 20) == AUTO_CAP
    assert connection_cap(ServerSettings(), fds=10) == 64
    assert connection_cap(ServerSettings(max_connections=7), fds=1 << 20) == 7


async def test_per_address_cap_and_release() -> None:
    metrics = Metrics()
    reg = Connections(ServerSettings(max_connections_per_address=2), metrics, fds=1 << 20)
    a, b, c = FakeConn("10.0.0.1"), FakeConn("10.0.0.1"), FakeConn("10.0.0.1")
    assert reg.admit(a) is None and reg.admit(b) is None
    refusal = reg.admit(c)
    assert isinstance(refusal, TooManyConnections) and refusal.status == 429
    assert refusal.response_headers()["retry-after"] == "1"
    assert reg.admit(FakeConn("10.0.0.2")) is None  # another address is not affected
    reg.release(a)
    assert reg.admit(c) is None
    assert reg.open == 3 and reg.per_address == {"10.0.0.1": 2, "10.0.0.2": 1}
    assert closed(metrics, "per_address") == 1
    assert metrics.connections_open._value.get() == 3
    reg.close()


async def test_trusted_proxies_are_not_capped_per_address() -> None:
    reg = Connections(ServerSettings(max_connections_per_address=1), fds=1 << 20,
                      is_proxy=lambda peer: peer == "10.0.0.9")
    assert all(reg.admit(FakeConn("10.0.0.9")) is None for _ in range(5))
    reg.close()


async def test_a_full_server_evicts_the_oldest_waiting_connection_first() -> None:
    metrics = Metrics()
    reg = Connections(ServerSettings(max_connections=3), metrics)
    old, busy, newer = FakeConn("a"), FakeConn("b"), FakeConn("c")
    for conn in (old, busy, newer):
        assert reg.admit(conn) is None
    reg.to_body(busy)
    reg.to_busy(busy)
    assert reg.admit(FakeConn("d")) is None
    assert (old.evicted, busy.evicted, newer.evicted) == (1, 0, 0)
    assert closed(metrics, "evicted") == 1
    # nobody waiting any more (all busy): the newcomer is refused 503
    for conn in list(reg.waiting):
        reg.to_body(conn)
        reg.to_busy(conn)
    refusal = reg.admit(FakeConn("e"))
    assert isinstance(refusal, ServerBusy) and refusal.status == 503
    assert closed(metrics, "server_full") == 1
    reg.close()


async def test_the_sweep_expires_only_passed_deadlines_and_stops_when_idle() -> None:
    reg = Connections(ServerSettings(head_timeout=0.2, body_timeout=0.2))
    assert reg.tick == pytest.approx(0.05)
    loop = asyncio.get_running_loop()
    late, fine, busy = FakeConn("a"), FakeConn("b"), FakeConn("c")
    for conn in (late, fine, busy):
        reg.admit(conn)
    late.deadline = loop.time() + 0.01
    fine.deadline = loop.time() + 60
    reg.to_body(busy)
    busy.deadline = loop.time() + 0.01
    reg.to_busy(busy)  # busy connections are not swept (the app's timeouts bound them)
    await asyncio.sleep(0.15)
    assert (late.expired, fine.expired, busy.expired) == (1, 0, 0)
    assert late.deadline == 0.0  # expired once, not again on the next sweep
    for conn in (late, fine, busy):
        reg.release(conn)
    await asyncio.sleep(0.12)
    assert reg._timer is None  # no connections: no sweeping
    reg.close()
