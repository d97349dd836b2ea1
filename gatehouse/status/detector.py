"""The status detector, pure: minute counts in, component state changes out. No clock, no I/O —
the caller passes ``now`` and the counts — so it is tested on replayed series.

A component is *firing* when a burn-rate rule holds. The SRE workbook's multi-window alerts:
its error budget (1 − availability) burns ``fast_burn``× over both the fast rule's long and
short windows (1 h and 5 min), or ``slow_burn``× over both of the slow rule's (6 h and 30 min).
Those pairs measure budget spent, so they are slow to see an outage begin: at 99.5 % a 20 %
failure needs 22 minutes to lift the 1-hour window to 14.4×. A status page must say within a
minute that something is wrong *now*, so a third rule, ``now``: ``now_burn``× (10×: 5 % at
99.5 %, five times the 1 % background a healthy LLM backend shows) over the last
``now_minutes`` (2), held for ``open_after`` seconds (15: a second look) — the hold and the
small-traffic guards, not a long window, keep a blip off the page. The same rules run on the latency budget (answers whose first byte took
longer than ``latency_ms``, against ``latency_objective``). A rule needs ``min_requests`` and
``min_faults`` in its short window, so a few failures of little traffic do not make an outage.

Its state while firing comes from the ``now`` window's error rate: ``major_outage`` from
``major_outage_rate``, ``partial_outage`` from ``partial_outage_rate``, else
``degraded_performance``. Hysteresis: a component leaves ``operational`` only after firing for
``open_after`` seconds; it gets worse at once but better only after the better state held for
``resolve_after``; it is back to ``operational`` after ``resolve_after`` seconds of being
*clear* — no rule firing and the ``now`` window burning less than half of ``now_burn``.
Minutes under maintenance are left out of every window (the failures of planned work are not
an incident, before or after it ends)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gatehouse.config import StatusSettings
from gatehouse.status.components import SEVERITY, Component

KEEP_MINUTES = 361  # the longest window (6 h) and the current minute


@dataclass(slots=True)
class Counts:
    """Requests of one minute of one component: judged, faults, and answers slower than its
    latency target."""

    requests: int = 0
    faults: int = 0
    slow: int = 0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.faults += other.faults
        self.slow += other.slow


@dataclass(frozen=True, slots=True)
class Rule:
    long_minutes: int
    short_minutes: int
    burn: float


@dataclass(frozen=True, slots=True)
class Policy:
    now: Rule = Rule(2, 2, 10.0)
    fast: Rule = Rule(60, 5, 14.4)
    slow: Rule = Rule(360, 30, 6.0)
    min_requests: int = 20
    min_faults: int = 5
    partial_rate: float = 0.10
    major_rate: float = 0.50
    open_after: float = 15.0
    resolve_after: float = 180.0

    @classmethod
    def of(cls, s: StatusSettings) -> Policy:
        return cls(Rule(s.now_minutes, s.now_minutes, s.now_burn),
                   Rule(s.fast_long_minutes, s.fast_short_minutes, s.fast_burn),
                   Rule(s.slow_long_minutes, s.slow_short_minutes, s.slow_burn),
                   s.min_requests, s.min_faults, s.partial_outage_rate, s.major_outage_rate,
                   s.open_after_seconds, s.resolve_after_seconds)


@dataclass(frozen=True, slots=True)
class Reading:
    """What the detector measured for one component at one tick."""

    requests: int              # in the ``now`` window
    error_rate: float | None   # faults / requests, ``now`` window
    slow_share: float | None
    burn: float                # error-budget burn of the ``now`` window
    rule: str | None           # "now" | "fast" | "slow" | "latency" when firing
    state: str                 # what the numbers alone call for


@dataclass(frozen=True, slots=True)
class Change:
    component: str
    at: float
    old: str
    new: str
    reading: Reading
    since: float  # when the component began firing (the onset), or ``at``


@dataclass(slots=True)
class _Track:
    status: str = "operational"
    firing_since: float | None = None
    clear_since: float | None = None
    better_since: float | None = None
    minutes: dict[int, Counts] = field(default_factory=dict)
    maintenance: set[int] = field(default_factory=set)


def window(minutes: Mapping[int, Counts], skip: set[int], now_minute: int,
           length: int) -> Counts:
    total = Counts()
    for m in range(now_minute - length + 1, now_minute + 1):
        c = minutes.get(m)
        if c is not None and m not in skip:
            total.add(c)
    return total


class Detector:
    def __init__(self, components: Iterable[Component], policy: Policy) -> None:
        self.components = {c.key: c for c in components}
        self.policy = policy
        self.tracks = {key: _Track() for key in self.components}
        self.readings: dict[str, Reading] = {}

    def restore(self, statuses: Mapping[str, str]) -> None:
        """Start from states a previous detector left (another replica held the lease)."""
        for key, status in statuses.items():
            if key in self.tracks and status in SEVERITY:
                self.tracks[key].status = status

    def observe(self, key: str, minute: int, counts: Counts) -> None:
        """The counts of one minute (replacing what was known of it: rows arrive late)."""
        track = self.tracks.get(key)
        if track is not None:
            track.minutes[minute] = counts

    def _burning(self, c: Component, track: _Track, now_minute: int,
                 rule: Rule) -> tuple[bool, bool, Counts]:
        p = self.policy
        short = window(track.minutes, track.maintenance, now_minute, rule.short_minutes)
        if short.requests < p.min_requests:
            return False, False, short
        long = window(track.minutes, track.maintenance, now_minute, rule.long_minutes)
        budget, slow_budget = 1 - c.availability, 1 - c.latency_objective
        errors = (short.faults >= p.min_faults
                  and short.faults / short.requests >= rule.burn * budget
                  and long.faults / max(1, long.requests) >= rule.burn * budget)
        slow = (short.slow >= p.min_faults
                and short.slow / short.requests >= rule.burn * slow_budget
                and long.slow / max(1, long.requests) >= rule.burn * slow_budget)
        return errors, slow, short

    def read(self, key: str, now: float) -> Reading:
        c, track, p = self.components[key], self.tracks[key], self.policy
        now_minute = int(now // 60)
        errors: str | None = None
        slow = False
        for name, rule_ in (("now", p.now), ("fast", p.fast), ("slow", p.slow)):
            err, late, counts = self._burning(c, track, now_minute, rule_)
            if name == "now":
                short = counts
            if err and errors is None:
                errors = name
            slow = slow or late
        rate = short.faults / short.requests if short.requests else None
        share = short.slow / short.requests if short.requests else None
        rule = errors or ("latency" if slow else None)
        state = "operational"
        if errors is not None:
            assert rate is not None
            state = ("major_outage" if rate >= p.major_rate else
                     "partial_outage" if rate >= p.partial_rate else "degraded_performance")
        elif rule == "latency":
            state = "degraded_performance"
        burn = (rate or 0.0) / (1 - c.availability)
        return Reading(short.requests, rate, share, burn, rule, state)

    def tick(self, now: float, maintenance: Iterable[str] = ()) -> list[Change]:
        """Judge every component at ``now``; the changes of state, in component order.
        ``maintenance``: the components under maintenance now."""
        under = set(maintenance)
        now_minute = int(now // 60)
        changes: list[Change] = []
        for key, track in self.tracks.items():
            for m in [m for m in track.minutes if m <= now_minute - KEEP_MINUTES]:
                del track.minutes[m]
            track.maintenance = {m for m in track.maintenance if m > now_minute - KEEP_MINUTES}
            if key in under:
                track.maintenance.add(now_minute)
            reading = self.read(key, now)
            self.readings[key] = reading
            new = self._step(track, reading, now, key in under)
            if new != track.status:
                since = track.firing_since if track.firing_since is not None else now
                changes.append(Change(key, now, track.status, new, reading, since))
                track.status = new
        return changes

    def _step(self, track: _Track, reading: Reading, now: float, maintained: bool) -> str:
        p, status = self.policy, track.status
        if maintained:
            track.firing_since = track.clear_since = track.better_since = None
            return "under_maintenance"
        if status == "under_maintenance":
            status = "operational"
        firing = reading.rule is not None
        if status == "operational":
            if not firing:
                track.firing_since = None
                return status
            track.firing_since = track.firing_since if track.firing_since is not None else now
            return reading.state if now - track.firing_since >= p.open_after else status
        # in an episode
        clear = not firing and reading.burn < self.policy.now.burn / 2
        if clear:
            track.better_since = None
            track.clear_since = track.clear_since if track.clear_since is not None else now
            if now - track.clear_since >= p.resolve_after:
                track.firing_since = track.clear_since = None
                return "operational"
            return status
        track.clear_since = None
        target = reading.state if firing else status
        if SEVERITY[target] > SEVERITY[status]:
            track.better_since = None
            return target
        if SEVERITY[target] < SEVERITY[status]:
            track.better_since = track.better_since if track.better_since is not None else now
            if now - track.better_since >= p.resolve_after:
                track.better_since = None
                return target
            return status
        track.better_since = None
        return status

    @property
    def statuses(self) -> dict[str, str]:
        return {key: t.status for key, t in self.tracks.items()}
