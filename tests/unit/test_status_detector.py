"""The status detector on replayed series with a controllable clock: a spike, a slow burn, 1 %
background noise for an hour (no incident), flapping at the threshold (one episode, not ten),
a maintenance window, small traffic and slow answers."""

from __future__ import annotations

import random
from collections.abc import Callable

from gatehouse.config import Settings
from gatehouse.status.components import components_of
from gatehouse.status.detector import Change, Counts, Detector, Policy

TICK = 15.0
START = 1_800_000_000.0 - 1_800_000_000.0 % 60  # a minute's start

# minute index (from the start) → (requests, faults, slow) in that minute
Series = Callable[[int], tuple[int, int, int]]


def detector() -> Detector:
    only_api = [c for c in components_of(Settings()) if c.key == "api"]
    return Detector(only_api, Policy())


def replay(series: Series, minutes: int, *, maintenance: Callable[[int], bool] = lambda m: False,
           det: Detector | None = None) -> tuple[Detector, list[Change]]:
    """Tick every 15 s over ``minutes``, after 6 hours of the series' own past (negative
    minutes) seen whole; the current minute is seen in part (what has been written so far),
    as rollups arrive."""
    det = det or detector()
    for m in range(-360, 0):
        det.observe("api", int(START // 60) + m, Counts(*series(m)))
    changes: list[Change] = []
    t = START
    while t < START + minutes * 60:
        index = int((t - START) // 60)
        for m in (index - 1, index):
            if m < 0:
                continue
            requests, faults, slow = series(m)
            seen = min(1.0, (t - START - m * 60 + TICK) / 60)
            det.observe("api", int(START // 60) + m,
                        Counts(round(requests * seen), round(faults * seen),
                               round(slow * seen)))
        changes += det.tick(t, ["api"] if maintenance(index) else [])
        t += TICK
    return det, changes


def opened(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.old == "operational" and c.new != "under_maintenance"]


def test_a_spike_opens_within_a_minute_and_resolves_after_it_ends() -> None:
    def series(m: int) -> tuple[int, int, int]:
        return (600, 120, 0) if 10 <= m < 20 else (600, 0, 0)  # 20 % for 10 minutes

    _, changes = replay(series, 60)
    assert len(opened(changes)) == 1
    first, last = changes[0], changes[-1]
    assert first.at - (START + 600) <= 60  # detected within a minute of the onset
    assert first.reading.rule == "now" and first.reading.error_rate is not None
    assert "partial_outage" in [c.new for c in changes]  # 20 %: a partial outage at its worst
    assert last.new == "operational"
    # back once the windows are clean and stayed clean for resolve_after (3 min)
    assert START + 20 * 60 + 180 <= last.at <= START + 20 * 60 + 9 * 60


def test_a_total_outage_is_major_and_recovery_steps_down() -> None:
    def series(m: int) -> tuple[int, int, int]:
        return (600, 600, 0) if 5 <= m < 10 else (600, 0, 0)

    _, changes = replay(series, 40)
    assert "major_outage" in [c.new for c in changes]
    assert changes[0].at - (START + 300) <= 60
    assert changes[-1].new == "operational"
    assert len(opened(changes)) == 1


def test_a_slow_burn_is_caught_by_the_slow_rule_not_the_fast_one() -> None:
    def series(m: int) -> tuple[int, int, int]:
        # 4.5 % from the start: 9x the 0.5 % budget — over 6x, under 14.4x
        return (600, 27, 0) if m >= 0 else (600, 0, 0)

    _, changes = replay(series, 330)
    assert len(changes) == 1  # once the 6-hour window reaches 6x (about 4.5 hours in)
    assert changes[0].at - START >= 4 * 3600
    assert changes[0].new == "degraded_performance"
    assert changes[0].reading.rule == "slow"


def test_one_percent_noise_for_an_hour_opens_nothing() -> None:
    rng = random.Random(7)
    draws = {m: sum(rng.random() < 0.01 for _ in range(300)) for m in range(-360, 60)}

    det, changes = replay(lambda m: (300, draws[m], 0), 60)
    assert changes == []
    assert det.statuses == {"api": "operational"}


def test_flapping_at_the_threshold_is_one_episode_not_ten() -> None:
    def series(m: int) -> tuple[int, int, int]:
        if m >= 60:
            return (600, 0, 0)
        return (600, 54, 0) if (m // 2) % 2 == 0 else (600, 36, 0)  # 9 % / 6 %, every 2 min

    _, changes = replay(series, 90)
    assert len(opened(changes)) == 1
    assert changes[-1].new == "operational"
    assert len(changes) <= 3


def test_maintenance_hides_its_failures_during_and_after() -> None:
    def series(m: int) -> tuple[int, int, int]:
        return (600, 600, 0) if 10 <= m < 20 else (600, 0, 0)

    det, changes = replay(series, 40, maintenance=lambda m: 9 <= m < 20)
    assert [(c.old, c.new) for c in changes] == [("operational", "under_maintenance"),
                                                 ("under_maintenance", "operational")]
    assert det.statuses == {"api": "operational"}


def test_small_traffic_never_fires() -> None:
    # two requests a minute, one failing every tenth minute: 5 % failing, but only 3 faults in
    # a 30-minute window and 4 requests in the 2-minute one
    _, changes = replay(lambda m: (2, 1 if m % 10 == 0 else 0, 0), 120)
    assert changes == []


def test_slow_answers_degrade_performance() -> None:
    _, changes = replay(lambda m: (600, 0, 200) if m >= 5 else (600, 0, 0), 20)
    assert [c.new for c in changes] == ["degraded_performance"]
    assert changes[0].reading.rule == "latency"


def test_restore_takes_over_a_previous_state() -> None:
    det = detector()
    det.restore({"api": "partial_outage", "unknown": "major_outage", "web": "nonsense"})
    assert det.statuses == {"api": "partial_outage"}
    _, changes = replay(lambda m: (600, 0, 0), 10, det=det)
    assert [(c.old, c.new) for c in changes] == [("partial_outage", "operational")]
