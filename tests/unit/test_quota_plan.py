"""The quota plan is made once and kept: the limits that apply to a principal until its tier,
the overrides or the settings change, and the counters' keys until their window ends. Kept
wrongly, a request would count in a window that is over, or under limits that changed."""

from __future__ import annotations

from pathlib import Path

from gatehouse.config import QuotaSettings
from gatehouse.quota.policy import Applicable, Estimate, charges_of
from tests.unit.test_quota_stage import T0, err, tiers, world_for

LIMITS: list[Applicable] = [("key", "k1", "requests_per_minute", 10),
                            ("key", "k1", "tokens_per_day", 1000),
                            ("key", "k1", "concurrent_requests", 2)]
EST = Estimate(30, 20)


def keys(now: float) -> dict[str, tuple[str, str | None, float]]:
    return {c.field: (c.ask.key, c.ask.previous, c.ask.expires)
            for c in charges_of(LIMITS, QuotaSettings(), EST, now)}


def test_counters_follow_the_window_not_the_first_request() -> None:
    minute = T0 - T0 % 60
    first = charges_of(LIMITS, QuotaSettings(), EST, T0)
    again = charges_of(LIMITS, QuotaSettings(), EST, T0 + 30)
    assert [c.ask.key for c in first] == [c.ask.key for c in again]
    assert first[0].ask.key is again[0].ask.key  # made once for the window, not per request
    assert [c.ask.amount for c in first] == [1, 50, 1]

    rpm_key, rpm_previous, rpm_end = keys(T0)["requests_per_minute"]
    assert rpm_key == f"q:key:k1:requests:m{int(minute)}"
    assert rpm_previous == f"q:key:k1:requests:m{int(minute) - 60}"
    assert rpm_end == minute + 60

    # the next minute: new key, the one just used is "the previous"; the day's stays
    later = keys(minute + 60)
    assert later["requests_per_minute"][0] == f"q:key:k1:requests:m{int(minute) + 60}"
    assert later["requests_per_minute"][1] == rpm_key
    assert later["tokens_per_day"][0] == keys(T0)["tokens_per_day"][0]
    # a clock set back (another replica's, a test's): the earlier window again, not the cache
    assert keys(T0)["requests_per_minute"][0] == rpm_key
    # a concurrency slot has no window: its reservation ends a ttl after each request
    ttl = QuotaSettings().reservation_ttl
    assert keys(T0)["concurrent_requests"][2] == T0 + ttl
    assert keys(T0 + 1)["concurrent_requests"][2] == T0 + 1 + ttl


def test_a_day_window_rolls_at_midnight_utc() -> None:
    midnight = T0 - T0 % 86400 + 86400
    before, after = keys(midnight - 0.001), keys(midnight)
    assert before["tokens_per_day"][0] != after["tokens_per_day"][0]
    assert after["tokens_per_day"][1] == before["tokens_per_day"][0]


async def test_an_override_set_while_serving_applies_to_the_next_request(
        tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(requests_per_minute=100)):
        key = await w.key()
        for _ in range(3):
            assert (await w.chat(key)).status_code == 200
        stage = next(s for s in w.app.routes["/v1/chat/completions"].pipeline.stages
                     if s.name == "quota")
        key_id = next(iter(stage._applicable))[0].key_id
        await stage.overrides.set("key", key_id, "requests_per_minute", 3)
        await stage.overrides.load()  # as the reload loop does when it hears of the change
        r = await w.chat(key)
        assert r.status_code == 429, r.text
        assert err(r)["code"] == "rate_limit_exceeded"
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        await stage.overrides.clear("key", key_id)
        await stage.overrides.load()
        r = await w.chat(key)
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "100"


async def test_a_reload_that_finds_nothing_new_keeps_the_limits_worked_out(
        tmp_path: Path) -> None:
    async for w in world_for(tmp_path, **tiers(requests_per_minute=100)):
        key = await w.key()
        assert (await w.chat(key)).status_code == 200
        stage = next(s for s in w.app.routes["/v1/chat/completions"].pipeline.stages
                     if s.name == "quota")
        (entry,) = stage._applicable.values()
        before = stage.overrides.snapshot
        await stage.overrides.load()  # the reload every few seconds: nothing changed
        assert stage.overrides.snapshot is before
        assert (await w.chat(key)).status_code == 200
        assert next(iter(stage._applicable.values()))[3] is entry[3]  # not worked out again
        key_id = next(iter(stage._applicable))[0].key_id
        await stage.overrides.set("key", key_id, "requests_per_minute", 50)
        await stage.overrides.load()  # a change: a new snapshot, the limits made again
        assert stage.overrides.snapshot is not before
        r = await w.chat(key)
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "50"
