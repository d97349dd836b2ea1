"""Bans on every state backend (memory and a real Redis): shared by replicas through the
broadcast, growing for repeat offenders, expiring, reloaded after a lost subscription; and the
detector that makes them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import orjson
import pytest

from gatehouse.config import DetectorSettings
from gatehouse.edge.bans import Ban, Bans
from gatehouse.edge.client import network_of
from gatehouse.edge.detector import Detector
from gatehouse.edge.rules import RuleError
from gatehouse.edge.visitor import Visitor
from gatehouse.state import State, open_state
from gatehouse.state.redis import RedisState
from gatehouse.telemetry.metrics import Metrics
from tests.support.services import REDIS_URL

ip = ipaddress.ip_address


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def states(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], State]]:
    """Makes state handles that share one backend (Redis: separate connections, as separate
    replicas have)."""
    made: list[State] = []
    shared = open_state("memory://") if request.param == "memory" else None

    def make() -> State:
        if shared is not None:
            return shared
        s = open_state(REDIS_URL)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.aclose()
    if shared is not None:
        await shared.aclose()


def fresh_net() -> str:
    """A random TEST-NET-free documentation-like /24 in 100.64/10, so runs never collide."""
    n = secrets.randbelow(2**14)
    return f"100.{64 + (n >> 8) % 64}.{n & 0xFF}"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_ban_reaches_every_replica_and_is_lifted_everywhere(
        states: Callable[[], State]) -> None:
    settings = DetectorSettings()
    one, two = Bans(states(), settings), Bans(states(), settings)
    await one.start()
    await two.start()
    # no wait for the subscriptions to go live: a ban broadcast before they are is found by
    # the reload each does once live
    net = fresh_net()
    addr = ip(f"{net}.7")
    try:
        assert two.banned(addr) is None
        ban = await one.ban(str(addr), "testing", 30)
        assert ban.subject == str(addr) and one.banned(addr) == ban
        await until(lambda: two.banned(addr) is not None)
        assert two.banned(ip(f"{net}.8")) is None
        assert str(addr) in {b.subject for b in await two.list()}
        # a network ban covers every address in it
        await one.ban(f"{net}.0/24", "the whole /24", 30)
        await until(lambda: two.banned(ip(f"{net}.99")) is not None)
        assert await two.unban(str(addr))
        await two.unban(f"{net}.0/24")
        await until(lambda: one.banned(addr) is None)
        assert not await one.unban(str(addr))
        # a replica that starts later loads the bans in force
        await one.ban(str(addr), "again", 30)
        late = Bans(states(), settings)
        await late.start()
        assert late.banned(addr) is not None
        await late.aclose()
    finally:
        await one.unban(str(addr))
        await one.aclose()
        await two.aclose()


async def test_repeat_offenders_get_doubling_capped_bans(states: Callable[[], State]) -> None:
    clock = Clock()
    settings = DetectorSettings(ban_seconds=10, max_ban_seconds=35, repeat_memory_seconds=3600)
    bans = Bans(states(), settings, clock=clock)
    subject = f"{fresh_net()}.1"
    try:
        lengths = []
        for _ in range(4):
            ban = await bans.ban(subject, "burst")
            lengths.append(ban.until - clock.now)
        assert lengths == [10, 20, 35, 35]
        assert [b.strikes for b in await bans.list() if b.subject == subject] == [4]
        # a ban by hand keeps its length and does not count as a strike
        assert (await bans.ban(subject, "by hand", 5)).strikes == 0
    finally:
        await bans.unban(subject)  # also forgets the strikes
    assert (await bans.ban(subject, "fresh start")).until - clock.now == 10
    await bans.unban(subject)


async def test_bans_expire(states: Callable[[], State]) -> None:
    bans = Bans(states(), DetectorSettings())
    subject = f"{fresh_net()}.2"
    await bans.ban(subject, "short", 2)
    assert bans.banned(ip(subject)) is not None
    await asyncio.sleep(2.2)
    assert bans.banned(ip(subject)) is None  # the mirror checks expiry itself
    assert subject not in {b.subject for b in await bans.list()}


async def test_bad_subjects_are_refused(states: Callable[[], State]) -> None:
    bans = Bans(states(), DetectorSettings())
    with pytest.raises(RuleError):
        await bans.ban("example.com", "x", 10)
    with pytest.raises(RuleError):
        await bans.ban("192.0.2.1", "x", 0)


async def test_a_lost_subscription_reloads_the_mirror() -> None:
    state = open_state("memory://")
    bans = Bans(state, DetectorSettings())
    await bans.start()
    other = Bans(state, DetectorSettings())
    await other.ban("192.0.2.44", "while away", 30)
    bans.mirror.clear()   # as if the broadcast had been missed …
    bans._index()
    assert bans.banned(ip("192.0.2.44")) is None
    bans.heard(None)      # … which the state layer reports as None
    await until(lambda: bans.banned(ip("192.0.2.44")) is not None)
    await bans.aclose()


async def test_redis_state_reports_a_dropped_subscription() -> None:
    """The Redis listener calls handlers with None when its connection breaks."""
    state = RedisState(REDIS_URL)
    bans = Bans(state, DetectorSettings())
    await bans.start()
    await asyncio.sleep(0.2)
    other = Bans(open_state(REDIS_URL), DetectorSettings())
    subject = f"{fresh_net()}.3"
    await other.ban(subject, "x", 30)
    await until(lambda: bans.banned(ip(subject)) is not None)
    bans.mirror.clear()
    bans._index()
    # kill this process's pub/sub connection from the server side (only ours: the Redis is
    # shared with other tests and processes, whose subscriptions must not be cut)
    import redis.asyncio as aioredis

    from gatehouse.state.redis import client_name

    admin = aioredis.from_url(REDIS_URL)
    ours = [c for c in await admin.client_list(_type="pubsub") if c["name"] == client_name()]
    assert ours, "the listener's connection carries this process's client name"
    for client in ours:
        await admin.client_kill_filter(_id=client["id"])
    await until(lambda: bans.banned(ip(subject)) is not None, timeout=8)
    await other.unban(subject)
    await admin.aclose()
    await other.state.aclose()
    await bans.aclose()
    await state.aclose()


def visitor(addr: str) -> Visitor:
    a = ip(addr)
    return Visitor(a, network_of(a, 24, 64), "GET", "/", {}, False, False)


async def test_detector_bans_bursts_401s_and_challenge_failures() -> None:
    state = open_state("memory://")
    ticks = Clock()
    settings = DetectorSettings(window_seconds=10, max_requests_per_address=5,
                                max_requests_per_network=8, max_unauthorized=3,
                                max_challenge_failures=2, ban_seconds=60)
    bans = Bans(state, settings)
    metrics = Metrics()
    detector = Detector(settings, bans, metrics, clock=ticks)
    for _ in range(5):
        detector.seen(visitor("192.0.2.1"))
    await asyncio.sleep(0)
    assert bans.banned(ip("192.0.2.1")) is None  # at the limit, not over it
    detector.seen(visitor("192.0.2.1"))
    await asyncio.sleep(0.01)
    ban = bans.banned(ip("192.0.2.1"))
    assert ban is not None and "more than 5 requests in 10 s" in ban.reason
    # the network: 8 in the window over several addresses (6 already from .1)
    detector.seen(visitor("192.0.2.2"))
    detector.seen(visitor("192.0.2.3"))
    assert bans.banned(ip("192.0.2.3")) is None
    detector.seen(visitor("192.0.2.4"))
    await asyncio.sleep(0.01)
    assert bans.banned(ip("192.0.2.200")).subject == "192.0.2.0/24"
    # a new window forgets the counts
    ticks.now += 11
    for _ in range(5):
        detector.seen(visitor("198.51.100.1"))
    ticks.now += 11
    detector.seen(visitor("198.51.100.1"))
    await asyncio.sleep(0.01)
    assert bans.banned(ip("198.51.100.1")) is None
    # offences
    for _ in range(4):
        detector.offense(visitor("198.51.100.2"), "unauthorized")
    for _ in range(3):
        detector.offense(visitor("198.51.100.3"), "challenge_failed")
    await asyncio.sleep(0.01)
    assert "401" in bans.banned(ip("198.51.100.2")).reason
    assert "failed challenges" in bans.banned(ip("198.51.100.3")).reason
    text = metrics.render().decode()
    assert 'gatehouse_edge_bans_total{cause="unauthorized"} 1.0' in text
    assert 'gatehouse_edge_bans_total{cause="network"} 1.0' in text
    await detector.aclose()


async def test_detector_off_counts_nothing() -> None:
    settings = DetectorSettings(enabled=False, max_requests_per_address=1)
    bans = Bans(open_state("memory://"), settings)
    detector = Detector(settings, bans, Metrics())
    for _ in range(5):
        detector.seen(visitor("192.0.2.1"))
        detector.offense(visitor("192.0.2.1"), "unauthorized")
    await asyncio.sleep(0.01)
    assert not bans.mirror


async def test_api_calls_with_a_key_are_left_to_the_quota_and_wrong_keys_to_the_401s() -> None:
    """A customer's backend behind one NAT address sends far more than the request limit with
    a valid key: no ban (the quota governs it). A bearer header on a page is no way around
    the count, and wrong keys are 401 offences."""
    state = open_state("memory://")
    settings = DetectorSettings(window_seconds=10, max_requests_per_address=5,
                                max_unauthorized=3, ban_seconds=60)
    bans = Bans(state, settings)
    detector = Detector(settings, bans, Metrics(), clock=Clock())
    a = ip("192.0.2.50")
    keyed = Visitor(a, network_of(a, 24, 64), "POST", "/v1/chat/completions",
                    {"authorization": "Bearer gh-live-x"}, True, False)
    for _ in range(50):
        assert not detector.seen(keyed)
    await asyncio.sleep(0.01)
    assert bans.banned(a) is None
    page = Visitor(a, network_of(a, 24, 64), "GET", "/login",
                   {"authorization": "Bearer made-up"}, True, True)
    assert [detector.seen(page) for _ in range(6)] == [False] * 5 + [True]
    b = ip("192.0.2.51")
    for _ in range(4):
        detector.offense(Visitor(b, network_of(b, 24, 64), "POST", "/v1/chat/completions",
                                 {"authorization": "Bearer wrong"}, True, False), "unauthorized")
    await asyncio.sleep(0.01)
    assert bans.banned(b) is not None
    await bans.aclose()
    await state.aclose()


async def test_bans_cover_their_addresses_and_networks_in_both_families() -> None:
    state = open_state("memory://")
    bans = Bans(state, DetectorSettings())
    await bans.ban("2001:db8:1::/48", "test", 60)
    await bans.ban("2001:db8:2::7", "test", 60)
    await bans.ban("198.51.100.0/22", "test", 60)
    await bans.ban("192.0.2.9", "test", 60)
    covered = ["2001:db8:1:ffff::1", "2001:db8:1::", "2001:db8:2::7", "198.51.103.255",
               "198.51.100.0", "192.0.2.9", "::ffff:192.0.2.9"]
    free = ["2001:db8:2::8", "2001:db8:3::1", "198.51.104.0", "192.0.2.10", "192.0.2.8"]
    for a in covered:
        address = ip(a)
        if address.version == 6 and address.ipv4_mapped:  # what the client module hands over
            address = address.ipv4_mapped
        assert bans.banned(address) is not None, a
    for a in free:
        assert bans.banned(ip(a)) is None, a
    await bans.aclose()
    await state.aclose()


async def test_a_ban_heard_while_the_bans_are_loaded_is_kept() -> None:
    """A load reads the bans, then replaces the mirror with what it read: a broadcast heard
    between the read and the replacement was lost (it was not in what was read). Broadcasts
    heard during a load are applied again after it; and of two loads, the one begun later
    wins even when the earlier one ends last."""
    state = open_state("memory://")
    bans = Bans(state, DetectorSettings())
    other = Bans(state, DetectorSettings())  # another replica: makes the bans and broadcasts
    net = fresh_net()
    first, second = f"{net}.1", f"{net}.2"
    release = asyncio.Event()
    real_list = bans.list

    async def slow_list() -> list[Ban]:  # reads now, answers when released
        found = await real_list()
        await release.wait()
        return found

    bans.list = slow_list  # type: ignore[method-assign]
    stale = asyncio.create_task(bans.load())  # reads: no bans yet
    await asyncio.sleep(0)
    made = await other.ban(first, "while the load was under way", 60)
    bans.heard(orjson.dumps({"op": "ban", "ban": asdict(made)}))  # its broadcast, heard
    release.set()
    await stale
    assert bans.banned(ip(first)) is not None  # applied again after the load

    release.clear()
    older = asyncio.create_task(bans.load())  # reads one ban, answers last
    await asyncio.sleep(0)
    await other.ban(second, "before the newer load", 60)  # not heard: only read
    bans.list = real_list  # type: ignore[method-assign]
    await bans.load()  # reads both, ends first
    release.set()
    await older
    assert bans.banned(ip(second)) is not None  # the older load did not overwrite it


def index_of(bans: Bans) -> tuple[Any, Any, Any]:
    return dict(bans._subjects), dict(bans._counts), dict(bans._lengths)


async def test_the_index_kept_ban_by_ban_is_the_index_rebuilt_whole() -> None:
    """Bans made, renewed, lifted and expired in a random order, in both families and at
    many prefix lengths: after each change the index (what banned() looks up) is what a
    rebuild from the whole mirror makes, and banned() answers by it."""
    import random

    rng = random.Random(7)
    state = open_state("memory://")
    bans = Bans(state, DetectorSettings())
    subjects = ([f"198.51.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(40)]
                + [f"10.{rng.randrange(256)}.0.0/{rng.choice((16, 20, 24))}" for _ in range(20)]
                + [f"2001:db8:{rng.randrange(65536):x}::/{rng.choice((48, 56, 64))}"
                   for _ in range(20)] + [f"2001:db8::{rng.randrange(65536):x}"
                                          for _ in range(20)])
    for _ in range(400):
        subject = rng.choice(subjects)
        if rng.random() < 0.6:
            await bans.ban(subject, "test", 60)
        else:
            await bans.unban(subject)
        kept = index_of(bans)
        bans._index()
        assert index_of(bans) == kept
        for banned in bans.mirror:
            net = ipaddress.ip_network(banned)
            assert bans.banned(net.network_address) is not None, banned
    lifted = [s for s in subjects if s not in bans.mirror and "/" not in s]
    for subject in lifted:  # a lifted address is free unless a network ban covers it
        covering = [n for n in bans.mirror
                    if ip(subject) in ipaddress.ip_network(n, strict=False)]
        assert (bans.banned(ip(subject)) is None) == (not covering), subject
    await bans.aclose()
    await state.aclose()


async def test_a_ban_among_thousands_reads_only_its_own_subject(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Banning (or lifting) one subject while 5,000 are banned parses that subject only:
    the index grows ban by ban instead of being rebuilt (each rebuild read every ban on the
    event loop: ~0.1 s a ban at 5,000, in an attack's every ban)."""
    import gatehouse.edge.bans as module

    state = open_state("memory://")
    bans = Bans(state, DetectorSettings())
    for n in range(5000):
        bans._remember(Ban(f"100.{64 + n // 65536}.{n // 256 % 256}.{n % 256}", "attack",
                           2e9))
    parsed: list[str] = []
    real = module.ipaddress.ip_network

    def counting(subject: str, strict: bool = True) -> Any:
        parsed.append(subject)
        return real(subject, strict=strict)

    monkeypatch.setattr(module.ipaddress, "ip_network", counting)
    bans._remember(Ban("203.0.113.7", "one more", 2e9))
    bans._forget("100.64.0.1")
    monkeypatch.undo()
    assert parsed == ["203.0.113.7", "100.64.0.1"]
    assert bans.banned(ip("203.0.113.7")) is not None
    assert bans.banned(ip("100.64.0.1")) is None
    assert bans.banned(ip("100.64.0.2")) is not None
    await bans.aclose()
    await state.aclose()


@pytest.mark.parametrize("forged", [
    b"not json", b'{"op": "ban"}', b'{"op": "ban", "ban": {"subject": "10.0.0.1"}}',
    b'{"op": "ban", "ban": {"subject": "not-an-address", "reason": "x", "until": 2e9}}',
    b'{"op": "ban", "ban": {"subject": "10.0.0.0/33", "reason": "x", "until": 2e9}}',
    b'{"op": "unban", "subject": "not-an-address"}',
])
async def test_a_forged_broadcast_changes_nothing_and_later_bans_apply(forged: bytes) -> None:
    """A message on the bans channel that is no ban (anyone with the state layer's address
    could publish one) is refused by the handler — the state layer logs it and goes on — and
    leaves the mirror and its index as they were; the next real ban applies as usual."""
    state = open_state("memory://")
    bans = Bans(state, DetectorSettings())
    await bans.ban("198.51.100.0/24", "before", 60)
    before = (dict(bans.mirror), index_of(bans))
    with contextlib.suppress(Exception):  # refused: what the state layer catches and logs
        bans.heard(forged)
    assert (dict(bans.mirror), index_of(bans)) == before
    made = Ban("192.0.2.44", "after", 2e9)
    bans.heard(orjson.dumps({"op": "ban", "ban": asdict(made)}))
    assert bans.banned(ip("192.0.2.44")) is not None
    assert bans.banned(ip("198.51.100.9")) is not None
    await bans.aclose()
    await state.aclose()
