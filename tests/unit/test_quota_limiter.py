"""One behaviour suite for the limiters: in-process memory and a real Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gatehouse.quota.limiter import Ask, Limiter, LimiterError, Settle
from gatehouse.quota.memory import MemoryLimiter
from gatehouse.quota.redis import MAX_BATCH, PREFIX, RedisLimiter
from gatehouse.quota.windows import format_reset, span
from tests.support.procs import free_port
from tests.support.services import REDIS_URL, private_redis

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    lim: Limiter = MemoryLimiter() if request.param == "memory" else RedisLimiter(REDIS_URL)
    yield lim
    await lim.aclose()


def key() -> str:
    return f"test:{secrets.token_hex(6)}"


async def test_reserve_up_to_the_limit_then_refuse(limiter: Limiter) -> None:
    k = key()
    for i in range(5):
        d = await limiter.reserve(f"r{i}", [Ask(k, 5, 1, NOW + 60)], NOW, 30)
        assert d.allowed and d.used == (i,)
    d = await limiter.reserve("r5", [Ask(k, 5, 1, NOW + 60)], NOW, 30)
    assert not d.allowed and d.refused == 0 and d.used == (5,)


async def test_all_or_nothing_across_counters(limiter: Limiter) -> None:
    a, b = key(), key()
    assert (await limiter.reserve("r1", [Ask(a, 10, 4, NOW + 60), Ask(b, 5, 4, NOW + 60)],
                                  NOW, 30)).allowed
    d = await limiter.reserve("r2", [Ask(a, 10, 4, NOW + 60), Ask(b, 5, 4, NOW + 60)], NOW, 30)
    assert not d.allowed and d.refused == 1 and d.used == (4, 4)
    # r2 reserved nothing, not even on a
    assert await limiter.usage([Ask(a, 0, 0, NOW + 60), Ask(b, 0, 0, NOW + 60)], NOW) == [4, 4]


async def test_settle_refunds_or_charges_the_difference(limiter: Limiter) -> None:
    k = key()
    await limiter.reserve("r1", [Ask(k, 100, 60, NOW + 60)], NOW, 30)
    assert await limiter.usage([Ask(k, 0, 0, NOW + 60)], NOW) == [60]
    await limiter.settle("r1", [Settle(k, 25, NOW + 60)], NOW)  # used less than reserved
    assert await limiter.usage([Ask(k, 0, 0, NOW + 60)], NOW) == [25]
    await limiter.reserve("r2", [Ask(k, 100, 10, NOW + 60)], NOW, 30)
    await limiter.settle("r2", [Settle(k, 90, NOW + 60)], NOW)  # used more: charged, over
    assert await limiter.usage([Ask(k, 0, 0, NOW + 60)], NOW) == [115]
    assert not (await limiter.reserve("r3", [Ask(k, 100, 1, NOW + 60)], NOW, 30)).allowed


async def test_release_commits_nothing_and_is_idempotent(limiter: Limiter) -> None:
    k = key()
    await limiter.reserve("r1", [Ask(k, 3, 3, NOW + 60)], NOW, 30)
    await limiter.settle("r1", [Settle(k, 0, NOW + 60)], NOW)
    await limiter.settle("r1", [Settle(k, 0, NOW + 60)], NOW)
    assert await limiter.usage([Ask(k, 0, 0, NOW + 60)], NOW) == [0]


async def test_reservations_lapse_after_their_ttl(limiter: Limiter) -> None:
    """A replica killed mid-request holds nothing past the reservation ttl."""
    k = key()
    assert (await limiter.reserve("dead", [Ask(k, 2, 2, NOW + 60)], NOW, 5)).allowed
    assert not (await limiter.reserve("r2", [Ask(k, 2, 1, NOW + 60)], NOW + 4, 5)).allowed
    assert (await limiter.reserve("r2", [Ask(k, 2, 1, NOW + 60)], NOW + 5.1, 5)).allowed


async def test_concurrent_reservations_never_over_admit(limiter: Limiter) -> None:
    k = key()
    results = await asyncio.gather(*(limiter.reserve(f"r{i}", [Ask(k, 37, 1, NOW + 60)],
                                                     NOW, 30) for i in range(200)))
    assert sum(d.allowed for d in results) == 37


async def test_zero_amount_only_reads(limiter: Limiter) -> None:
    k = key()
    await limiter.reserve("r1", [Ask(k, 5, 5, NOW + 60)], NOW, 30)
    d = await limiter.reserve("peek", [Ask(k, 5, 0, NOW + 60)], NOW, 30)
    assert d.allowed and d.used == (5,)


async def test_redis_is_one_round_trip_per_request() -> None:
    """A settle rides along with the next reservation; alone, it goes after a short delay."""
    lim = RedisLimiter(REDIS_URL)
    try:
        asks = [Ask(key(), 10, 1, NOW + 60) for _ in range(6)]
        await lim.reserve("warm", asks, NOW, 30)  # loads the script once
        before = dict(lim.round_trips)
        for i in range(5):
            await lim.reserve(f"r{i}", asks, NOW, 30)
            await lim.settle(f"r{i}", [Settle(a.key, 1, a.expires) for a in asks], NOW)
        assert lim.round_trips == {**before, "reserve": before["reserve"] + 5}
        await asyncio.sleep(0.15)  # nobody reserved: the last settle was sent on its own
        assert lim.round_trips == {**before, "reserve": before["reserve"] + 5,
                                   "settle": before["settle"] + 1}
        other = RedisLimiter(REDIS_URL)  # another replica sees the settled state
        try:
            assert await other.usage([asks[0]], NOW) == [6]  # 5 settled + "warm" held
        finally:
            await other.aclose()
    finally:
        await lim.aclose()


async def test_redis_reservations_of_one_turn_share_a_call_decided_in_order() -> None:
    """The first reservation with no call under way leaves at once; those asked for while a
    call is under way go together in one call at the end of the turn (MAX_BATCH at most),
    each decided as its own call would be, in the order asked: on a limit of 3, of five
    requests for one each the first three fit; a request of several counters that one of
    them refuses takes nothing from the others; a read sees what those before it took."""
    lim = RedisLimiter(REDIS_URL)
    try:
        await lim.reserve("warm", [Ask(key(), 10, 1, NOW + 60)], NOW, 30)
        k, other = key(), key()
        before = lim.round_trips["reserve"]
        asked = [lim.reserve(f"r{i}", [Ask(k, 3, 1, NOW + 60)], NOW, 30) for i in range(5)]
        asked.append(lim.reserve("both", [Ask(other, 9, 2, NOW + 60), Ask(k, 3, 1, NOW + 60)],
                                 NOW, 30))
        asked.append(lim.reserve("peek", [Ask(other, 9, 0, NOW + 60), Ask(k, 3, 0, NOW + 60)],
                                 NOW, 30))
        got = await asyncio.gather(*asked)
        assert lim.round_trips["reserve"] - before == 2  # the first; the six others
        assert [d.allowed for d in got[:5]] == [True, True, True, False, False]
        assert [d.used for d in got[:5]] == [(0,), (1,), (2,), (3,), (3,)]
        assert got[3].refused == 0
        assert not got[5].allowed and got[5].refused == 1 and got[5].used == (0, 3)
        assert got[6].allowed and got[6].used == (0, 3)  # "both" took nothing from `other`

        # more than MAX_BATCH in one turn: several calls, the same decisions
        k = key()
        before = lim.round_trips["reserve"]
        got = await asyncio.gather(*(lim.reserve(f"s{i}", [Ask(k, 20, 1, NOW + 60)], NOW, 30)
                                     for i in range(2 * MAX_BATCH + 1)))
        assert lim.round_trips["reserve"] - before == 3  # the first; 2 × MAX_BATCH
        assert sum(d.allowed for d in got) == 20
        assert sorted(d.used[0] for d in got)[:21] == list(range(21))
    finally:
        await lim.aclose()


async def test_redis_a_caller_gone_before_its_call_reserves_nothing() -> None:
    lim = RedisLimiter(REDIS_URL)
    try:
        k = key()
        stays = asyncio.ensure_future(lim.reserve("stays", [Ask(k, 5, 1, NOW + 60)], NOW, 30))
        goes = asyncio.ensure_future(lim.reserve("goes", [Ask(k, 5, 4, NOW + 60)], NOW, 30))
        await asyncio.sleep(0)  # both asked; the call leaves at the end of the turn
        goes.cancel()
        assert (await stays).allowed
        assert await lim.usage([Ask(k, 5, 0, NOW + 60)], NOW) == [1]
    finally:
        await lim.aclose()


async def test_redis_unreachable_fails_every_caller_of_a_shared_call() -> None:
    lim = RedisLimiter("redis://127.0.0.1:1/0", socket_timeout=0.5)  # nobody listens
    try:
        got = await asyncio.gather(*(lim.reserve(f"r{i}", [Ask(key(), 5, 1, NOW + 60)], NOW,
                                                 30) for i in range(4)),
                                   return_exceptions=True)
        assert all(isinstance(e, LimiterError) for e in got), got
        assert lim.round_trips["reserve"] == 2  # the first; the three others
    finally:
        await lim.aclose()


async def test_redis_a_bad_key_fails_its_own_reservation_and_settle_only() -> None:
    """A counter's key holding another type (written by something else) fails the one
    reservation that uses it, not the others sharing its call (they were failed, though
    reserved in Redis: a script does not roll back); a settle on such a key is dropped, not
    queued again and applied again with every later call."""
    lim = RedisLimiter(REDIS_URL)
    r = redis.asyncio.from_url(REDIS_URL)
    bad, good, settled = key(), key(), key()
    try:
        await r.set(PREFIX + bad, "x", ex=60)
        assert (await lim.reserve("s", [Ask(settled, 100, 5, NOW + 60)], NOW, 30)).allowed
        await lim.settle("s", [Settle(settled, 5, NOW + 60), Settle(bad, 1, NOW + 60)], NOW)
        hold = asyncio.ensure_future(lim.reserve("hold", [], NOW, 30))
        await asyncio.sleep(0)  # a call under way: the three below share the next one
        got = await asyncio.gather(
            lim.reserve("g1", [Ask(good, 10, 1, NOW + 60)], NOW, 30),
            lim.reserve("bad", [Ask(bad, 10, 1, NOW + 60)], NOW, 30),
            lim.reserve("g2", [Ask(good, 10, 1, NOW + 60)], NOW, 30),
            return_exceptions=True)
        await hold
        assert isinstance(got[1], LimiterError) and "WRONGTYPE" in str(got[1]), got[1]
        assert [d.allowed for d in (got[0], got[2])] == [True, True], got  # type: ignore[union-attr]
        assert got[2].used == (1,)  # type: ignore[union-attr]
        await lim.reserve("later", [Ask(key(), 10, 1, NOW + 60)], NOW, 30)
        await lim.flush()
        # the good settle applied once, the bad one dropped (not retried with each call)
        assert await r.hget(PREFIX + settled, "c") == b"5"
        assert lim._pending == []
    finally:
        await lim.aclose()
        await r.aclose()


async def test_redis_every_key_it_writes_expires_a_minute_after_its_window() -> None:
    """A counter's hash and its reservations' sorted set are dropped 60 s after their window
    ends, however the counter was first written — by a reservation, a read, or a settle of a
    request that ended in a later window — and whatever came after: reservations in flight,
    settles into the same window, one lapsing and swept. (The script sets an expiry only
    where a key may be new; this holds it to that.)"""
    lim = RedisLimiter(REDIS_URL)
    r = redis.asyncio.from_url(REDIS_URL)
    base = key()
    w0, w1, w2, w3 = (f"{base}:w{i}" for i in range(4))
    end = {w: NOW + 60 * (i + 1) for i, w in enumerate((w0, w1, w2, w3))}

    def ask(w: str, amount: int, previous: str | None = None) -> Ask:
        return Ask(w, 100, amount, end[w], previous)

    try:
        assert (await lim.reserve("a", [ask(w0, 5)], NOW, 30)).allowed  # made by a reservation
        assert (await lim.reserve("b", [ask(w0, 5)], NOW, 30)).allowed  # "a" in flight
        assert (await lim.reserve("gone", [ask(w0, 5)], NOW, 2)).allowed  # will lapse
        await lim.settle("a", [Settle(w0, 7, end[w0])], NOW + 1)  # into its own window
        await lim.settle("b", [Settle(w0, 3, end[w0], w1, end[w1])], NOW + 61)  # makes w1
        assert await lim.usage([ask(w2, 0, w1)], NOW + 121) == [0]  # a read makes w2
        assert (await lim.reserve("c", [ask(w0, 1)], NOW + 10, 30)).allowed  # sweeps "gone"
        assert (await lim.reserve("d", [ask(w3, 4, w2)], NOW + 181, 30)).allowed
        await lim.reserve("e", [ask(w3, 0)], NOW + 181, 30)  # a read of a counter in use
        await lim.flush()
        found = {k.decode(): await r.pexpiretime(k) for k in await r.keys(f"{PREFIX}{base}:*")}
        expected = {PREFIX + w0: end[w0], PREFIX + w0 + ":e": end[w0],  # "c" in flight
                    PREFIX + w1: end[w1], PREFIX + w2: end[w2],
                    PREFIX + w3: end[w3], PREFIX + w3 + ":e": end[w3]}
        assert found == {k: int(e * 1000) + 60_000 for k, e in expected.items()}
        assert await r.hget(PREFIX + w0, "gone") is None  # swept
        assert await r.hget(PREFIX + w1, "c") == b"3"
    finally:
        await lim.aclose()
        await r.aclose()


async def test_redis_refusing_writes_fails_the_call_and_keeps_the_settles() -> None:
    """An error of the server, not of one key — READONLY: the limiter still connected to a
    primary demoted by a failover — fails the whole call, and the riding settles are sent
    again later, not dropped as a bad key's are (usage lost, the window over-admitted)."""
    with private_redis(free_port()) as url, private_redis(free_port()) as other:
        lim = RedisLimiter(url)
        admin = redis.asyncio.from_url(url)
        k = key()
        try:
            assert (await lim.reserve("r1", [Ask(k, 100, 5, NOW + 60)], NOW, 30)).allowed
            await lim.settle("r1", [Settle(k, 5, NOW + 60)], NOW)
            port = int(other.rsplit(":", 1)[1].split("/")[0])
            await admin.replicaof("127.0.0.1", port)  # demoted: read-only from now
            with pytest.raises(LimiterError, match="READONLY"):
                await lim.reserve("r2", [Ask(k, 100, 1, NOW + 60)], NOW, 30)
            assert len(lim._pending) == 1  # the settle waits for the next call
            await admin.replicaof("NO", "ONE")  # writable again
            await lim.flush()
            assert await admin.hget(PREFIX + k, "c") == b"5"
        finally:
            await lim.aclose()
            await admin.aclose()


async def test_redis_a_bad_settle_sent_alone_is_dropped_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    lim = RedisLimiter(REDIS_URL)
    r = redis.asyncio.from_url(REDIS_URL)
    bad = key()
    try:
        await r.set(PREFIX + bad, "x", ex=60)
        await lim.settle("s", [Settle(bad, 1, NOW + 60)], NOW)
        with caplog.at_level("WARNING", logger="gatehouse.quota"):
            await lim.flush()
        assert lim._pending == []
        assert "1 settle(s) could not be applied" in caplog.text
    finally:
        await lim.aclose()
        await r.aclose()


async def test_redis_aclose_waits_for_every_reservation_under_way() -> None:
    """The calls of a turn beyond the first and those sent at once by their callers are
    answered before aclose returns (it awaited only the calls it saw first, and the client
    was then reopened under the later ones)."""
    lim = RedisLimiter(REDIS_URL)
    await lim.reserve("warm", [Ask(key(), 10, 1, NOW + 60)], NOW, 30)
    sent = lim._send

    async def slow(reservations: Any, riding: Any, kind: str) -> list[int]:
        await asyncio.sleep(0.2)  # a slow network: each call takes a while
        return await sent(reservations, riding, kind)

    lim._send = slow  # type: ignore[method-assign]
    k = key()
    callers = [asyncio.ensure_future(lim.reserve(f"r{i}", [Ask(k, 100, 1, NOW + 60)], NOW, 30))
               for i in range(1 + 3 * MAX_BATCH)]
    await asyncio.sleep(0)
    await lim.aclose()
    assert all(c.done() for c in callers)
    assert all(c.result().allowed for c in callers)


async def test_redis_a_failure_after_a_lost_script_is_a_limiter_error() -> None:
    """Redis lost its script cache and then the connection: the quota stage's failure
    policy applies (LimiterError) — the retry's error went out bare, which the stage does
    not catch (a 500)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError

    lim = RedisLimiter(REDIS_URL)
    errors = [NoScriptError("NOSCRIPT"), RedisConnectionError("reset by peer")]

    async def failing(**_: Any) -> list[int]:
        raise errors.pop(0)

    try:
        lim._reserve = failing  # type: ignore[assignment]
        with pytest.raises(LimiterError, match="reset by peer"):
            await lim.reserve("r", [Ask(key(), 5, 1, NOW + 60)], NOW, 30)
        errors[:] = [NoScriptError("NOSCRIPT"), NoScriptError("NOSCRIPT")]
        with pytest.raises(LimiterError, match="NOSCRIPT"):
            await lim.reserve("r2", [Ask(key(), 5, 1, NOW + 60)], NOW, 30)
    finally:
        await lim.aclose()


async def test_redis_aclose_with_redis_gone_leaves_nothing_running() -> None:
    """The last flush fails (Redis gone): it is said in the log, not retried a second later
    on the closed client."""
    lim = RedisLimiter("redis://127.0.0.1:1/0", socket_timeout=0.5)  # nobody listens
    await lim.settle("s", [Settle(key(), 1, NOW + 60)], NOW)
    await lim.aclose()
    assert lim._flusher is None and not lim._flushing


async def test_redis_settles_are_not_lost_at_shutdown() -> None:
    lim, other = RedisLimiter(REDIS_URL), RedisLimiter(REDIS_URL)
    try:
        k = key()
        await lim.reserve("r1", [Ask(k, 10, 4, NOW + 60)], NOW, 30)
        await lim.settle("r1", [Settle(k, 2, NOW + 60)], NOW)
        await lim.aclose()  # flushes the queued settle
        assert await other.usage([Ask(k, 0, 0, NOW + 60)], NOW) == [2]
    finally:
        await other.aclose()


def test_windows_are_calendar_aligned() -> None:
    s = span("minute", 1_800_000_030.5)
    assert (s.start, s.end) == (1_800_000_000.0 - 1_800_000_000 % 60 + 0, s.start + 60)
    assert s.start % 60 == 0 and s.start <= 1_800_000_030.5 < s.end
    day = span("day", 1_800_000_030.5)
    assert day.start % 86400 == 0 and day.end - day.start == 86400
    month = span("month", 1_800_000_030.5)  # 2027-01-15
    assert month.tag == "mo202701" and span("month", month.end).tag == "mo202702"
    dec = span("month", 1_796_083_200.0 + 86400 * 5)  # 2026-12-06
    assert dec.tag == "mo202612" and span("month", dec.end).tag == "mo202701"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.02, "20ms"), (0.9994, "999ms"), (1, "1s"), (1.2, "2s"), (59, "59s"), (60, "1m0s"),
    (360, "6m0s"), (3723, "1h2m3s")])
def test_reset_format_matches_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_overshoot_is_owed_by_the_next_window(limiter: Limiter) -> None:
    """A window whose requests used more than they reserved hands the excess to the next one
    (with the excess it inherited itself), fixed when the next window is first used."""
    base = key()
    w0, w1, w2 = (f"{base}:w{i}" for i in range(3))
    assert (await limiter.reserve("r1", [Ask(w0, 100, 10, NOW + 60)], NOW, 30)).allowed
    await limiter.settle("r1", [Settle(w0, 250, NOW + 60)], NOW)  # 150 beyond the limit
    assert await limiter.usage([Ask(w1, 100, 0, NOW + 120, w0)], NOW + 60) == [150]
    assert not (await limiter.reserve("r2", [Ask(w1, 100, 1, NOW + 120, w0)],
                                      NOW + 61, 30)).allowed
    # w1 took no request: its 150 of debt is 50 over its limit, owed by w2
    d = await limiter.reserve("r3", [Ask(w2, 100, 50, NOW + 180, w1)], NOW + 121, 30)
    assert d.allowed and d.used == (50,)
    assert not (await limiter.reserve("r4", [Ask(w2, 100, 1, NOW + 180, w1)],
                                      NOW + 121, 30)).allowed


async def test_a_request_that_outlives_its_window_counts_in_the_one_it_ended_in(
        limiter: Limiter) -> None:
    base = key()
    w0, w1 = f"{base}:w0", f"{base}:w1"
    assert (await limiter.reserve("long", [Ask(w0, 100, 80, NOW + 60)], NOW, 300)).allowed
    await limiter.settle("long", [Settle(w0, 70, NOW + 60, w1, NOW + 120)], NOW + 65)
    assert await limiter.usage([Ask(w0, 100, 0, NOW + 60), Ask(w1, 100, 0, NOW + 120, w0)],
                               NOW + 65) == [0, 70]


@pytest.mark.parametrize("actual", [37, 10, 400])
async def test_long_run_rate_holds_whatever_the_requests_really_use(
        limiter: Limiter, actual: int) -> None:
    """Requests that reserve 10 and use ``actual``: over 12 windows the committed total stays
    within 12 × limit plus what the last window overshot, and that overshoot is at most what
    the requests admitted in it used beyond their reservations."""
    base, limit, total, last_excess = key(), 100, 0, 0
    for w in range(12):
        now = NOW + 60 * w
        k = f"{base}:w{w}"
        prev = f"{base}:w{w - 1}" if w else None
        admitted = 0
        for i in range(50):  # more than can fit
            rid = f"w{w}r{i}"
            if (await limiter.reserve(rid, [Ask(k, limit, 10, now + 60, prev)], now, 30)).allowed:
                admitted += 1
                await limiter.settle(rid, [Settle(k, actual, now + 60)], now)
        total += admitted * actual
        last_excess = admitted * max(0, actual - 10)
    assert total <= 12 * limit + last_excess
    if actual <= 10:
        assert total <= 12 * limit


async def test_reservations_in_flight_add_up_as_they_come_settle_and_lapse(
        limiter: Limiter) -> None:
    """A random run of reservations (some settled, some never: lapsing after their ttl)
    against the sum it must give; the in-process limiter keeps that sum as it goes."""
    import random

    rng, k, now = random.Random(11), key(), NOW
    window = Ask(k, 10**9, 0, NOW + 3600)
    open_: dict[str, tuple[int, float]] = {}  # rid → (amount, until): the model
    for i in range(300):
        now += rng.choice([0.0, 0.0, 0.5, 2.0])
        if open_ and rng.random() < 0.4:  # a request ends: its reservation goes
            rid = rng.choice(sorted(open_))
            del open_[rid]
            await limiter.settle(rid, [Settle(k, 0, NOW + 3600)], now)
        else:
            amount = rng.randint(1, 50)
            d = await limiter.reserve(f"r{i}", [Ask(k, 10**9, amount, NOW + 3600)], now, 10)
            assert d.allowed
            open_[f"r{i}"] = (amount, now + 10)
        expected = sum(a for a, until in open_.values() if until > now)
        assert await limiter.usage([window], now) == [expected], i
