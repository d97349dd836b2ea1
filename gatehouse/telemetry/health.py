"""Health views: for one filter and one window, the traffic's numbers — requests, errors by
class, latency and time-to-first-byte percentiles, admission wait, tokens — and a time series
of them, answered from the rollups only (never the request log): whole hours and days from the
compacted tables where the series' points allow, minutes for the rest (store/rollups.py, plan).

One query serves every view: ``GET /admin/v1/health`` (any filter), ``GET /v1/health`` (the
caller's own org), ``gatehouse health`` and the page. :func:`parse_query` checks what was asked,
:func:`resolve` turns org and project names into the ids rollups hold (and scopes a customer to
their org), :func:`health` is pure — rows in, the answer out — and :func:`read_health` puts the
three together over the store."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import or_, select

from gatehouse.errors import InvalidRequest, NotFound
from gatehouse.store.db import Store
from gatehouse.store.rollups import GRAINS, WIDTH, Bucket, RollupRows, plan
from gatehouse.store.tables import Org, Project
from gatehouse.telemetry.compaction import Retention
from gatehouse.telemetry.histogram import Histogram
from gatehouse.telemetry.record import COMPONENTS, ERROR_CLASSES
from gatehouse.telemetry.rollups import FLUSH_SECONDS, Cell

# window: (minutes, minutes per point of the series)
WINDOWS: dict[str, tuple[int, int]] = {
    "5m": (5, 1), "15m": (15, 1), "1h": (60, 1), "6h": (360, 10), "24h": (1440, 30),
    "7d": (10080, 240), "30d": (43200, 720), "90d": (129600, 1440)}
DEFAULT_WINDOW = "1h"
FILTERS = ("model", "tier", "org", "project", "component")
# asked for by users, but not a dimension of the rollups: refused rather than ignored
NOT_ROLLED_UP = {
    "key": "Rollups are counted per org and project, not per API key: filter by `project` "
           "(a key belongs to one), or look single requests up in the request log.",
    "endpoint": "Rollups are counted per component (api, web, login, admin), not per "
                "endpoint: filter by `component`.",
}
VALUE_MAX = 128
MAX_PARAMS = 16
QUANTILES = (50, 95, 99)
PERCENTILE_NOTE = ("Percentiles come from merged fixed-bucket histograms: each is within one "
                   "bucket (a factor of √2) of the exact value.")
DIMENSIONS_NOTE = ("Rollups have no API key or endpoint dimension: filter by project or "
                   "component.")
LAG_NOTE = (f"Each worker writes its counts every {FLUSH_SECONDS:g} s: the newest seconds may "
            "be missing.")


@dataclass(frozen=True, slots=True)
class HealthQuery:
    window: str = DEFAULT_WINDOW
    filters: dict[str, str] = field(default_factory=dict)


def parse_query(items: Iterable[tuple[str, str]]) -> HealthQuery:
    """The query string's pairs, checked: known names, each once, a known window."""
    window: str | None = None
    filters: dict[str, str] = {}
    for name, value in items:
        if name in NOT_ROLLED_UP:
            raise InvalidRequest(NOT_ROLLED_UP[name], param=name)
        if name != "window" and name not in FILTERS:
            raise InvalidRequest(f"Unknown parameter `{name}`. Filter by "
                                 f"{', '.join(FILTERS)}; choose the window with `window`.",
                                 param=name)
        if name in filters or (name == "window" and window is not None):
            raise InvalidRequest(f"`{name}` was given more than once; give it once.",
                                 param=name)
        if name == "window":
            if value not in WINDOWS:
                raise InvalidRequest(f"Unknown window {value!r}: choose one of "
                                     f"{', '.join(WINDOWS)}.", param="window")
            window = value
            continue
        if not value or len(value) > VALUE_MAX or not value.isprintable():
            raise InvalidRequest(f"`{name}` must be 1 to {VALUE_MAX} printable characters.",
                                 param=name)
        if name == "component" and value not in COMPONENTS:
            # a typo must not read as "no traffic": rollups hold these components only
            raise InvalidRequest(f"Unknown component {value!r}: choose one of "
                                 f"{', '.join(COMPONENTS)}.", param="component")
        filters[name] = value
    return HealthQuery(window or DEFAULT_WINDOW, filters)


def parse_query_string(raw: bytes) -> HealthQuery:
    """:func:`parse_query` of a raw query string (``?model=demo&window=1h``)."""
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=MAX_PARAMS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"The query string is not valid: give at most {MAX_PARAMS} "
                             "parameters, as UTF-8, percent-encoded.") from None
    return parse_query(pairs)


def not_found(name: str, value: str) -> NotFound:
    """The same words for "does not exist" and "not yours"."""
    return NotFound(f"No {name} `{value}` was found in your organization.", param=name)


async def resolve(store: Store, query: HealthQuery, own_org: str | None = None
                  ) -> dict[str, str]:
    """The rollup filters for ``query``: ``org`` and ``project`` by name or id made ids
    (a project also as ``org/project``). ``own_org`` (a customer's org id) is always in force,
    and an org or project outside it is "not found", exactly as one that does not exist."""
    filters = dict(query.filters)
    org_id = own_org
    async with store.session() as s:
        if "org" in filters:
            value = filters["org"]
            org = await s.scalar(select(Org).where(or_(Org.id == value, Org.name == value)))
            if org is None or (own_org is not None and org.id != own_org):
                raise not_found("org", value)
            org_id = org.id
        if "project" in filters:
            value = filters["project"]
            org_name, _, name = value.rpartition("/")
            pick = select(Project).where(or_(Project.id == name, Project.name == name))
            if org_name:
                pick = pick.join(Org, Org.id == Project.org_id).where(
                    or_(Org.name == org_name, Org.id == org_name))
            if org_id is not None:
                pick = pick.where(Project.org_id == org_id)
            found = list((await s.scalars(pick.limit(2))).all())
            if not found:
                raise not_found("project", value)
            if len(found) > 1:
                raise InvalidRequest(f"More than one org has a project named `{value}`: "
                                     "name it as org/project, or by its id.",
                                     param="project")
            filters["project"] = found[0].id
    if org_id is not None:
        filters["org"] = org_id
    return filters


@dataclass(slots=True)
class Totals:
    """Sums of rollup rows: every number of a window (or of one point, one model). A row is
    a cell as one replica wrote it, so the sums are cells merged, plus the count per class."""

    cell: Cell = field(default_factory=Cell)
    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_CLASSES, 0))

    def add(self, row: Bucket, latency: Histogram, ttfb: Histogram) -> None:
        self.cell.merge(Cell(row.requests, row.prompt_tokens, row.completion_tokens,
                             row.admission_wait_ms, latency, ttfb))
        self.classes[row.error_class] = self.classes.get(row.error_class, 0) + row.requests

    @property
    def requests(self) -> int:
        return self.cell.requests

    @property
    def errors(self) -> int:
        return self.requests - self.classes["ok"]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def percentiles(self, h: Histogram) -> dict[str, float | None]:
        return {f"p{q}": _round(h.percentile(q)) for q in QUANTILES}

    def brief(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": _round(self.error_rate, 6),
                "latency_ms": self.percentiles(self.cell.latency)}

    def whole(self) -> dict[str, Any]:
        c, n = self.cell, self.requests
        return {
            **self.brief(),
            "error_classes": {c: {"count": k, "share": _round(k / n if n else None, 6)}
                              for c, k in self.classes.items()},
            "ttfb_ms": self.percentiles(c.ttfb),
            "admission_wait_ms": {"mean": _round(c.admission_wait_ms / n if n else None),
                                  "total": _round(c.admission_wait_ms)},
            "tokens": {"prompt": c.prompt_tokens, "completion": c.completion_tokens,
                       "total": c.prompt_tokens + c.completion_tokens},
        }


def summarize(rows: Iterable[Bucket]) -> dict[str, Any]:
    """One window's numbers from its rows, raw: requests, each error class, error rate (every
    class but ``ok``), tokens, unrounded percentiles, mean admission wait."""
    t = Totals()
    for row in rows:
        t.add(row, *histograms(row))
    c = t.cell
    return {
        "requests": c.requests, "classes": t.classes, "error_rate": t.error_rate,
        "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
        "latency_ms": {f"p{q}": c.latency.percentile(q) for q in QUANTILES},
        "ttfb_ms": {f"p{q}": c.ttfb.percentile(q) for q in QUANTILES},
        "admission_wait_ms_mean": c.admission_wait_ms / c.requests if c.requests else None,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def histograms(row: Bucket) -> tuple[Histogram, Histogram]:
    return (Histogram.from_json(orjson.loads(row.latency)),
            Histogram.from_json(orjson.loads(row.ttfb)))


def grain(window: str) -> str:
    """The coarsest rollup table whose buckets fit the window's points whole."""
    step = WINDOWS[window][1]
    return max((g for g in GRAINS if step % WIDTH[g] == 0), key=WIDTH.__getitem__)


def span(window: str, now: float, retention: Retention | None = None) -> tuple[int, int]:
    """The window's minutes, ``since`` ≤ m < ``until``: it ends with the current minute. A
    start older than the minute rows kept moves back to its hour (or, older than the hours
    kept, its day): the window is then answered from whole compacted buckets there."""
    until = int(now // 60) + 1
    since = until - WINDOWS[window][0]
    if retention is not None:
        for finer, coarser in (("minute", "hour"), ("hour", "day")):
            if since < until - retention.minutes(finer) and grain(window) != finer:
                since -= since % WIDTH[coarser]
    return since, until


def iso_minute(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def health(rows: Iterable[Bucket], query: HealthQuery, filters: dict[str, str], *,
           now: float, retention: Retention | None = None) -> dict[str, Any]:
    """The answer for one window from its rollup rows (pure): rows of any grain, each counted
    in the point its bucket starts in. ``filters``: what the rows were chosen by
    (``query.filters`` resolved to ids); ``retention``: how long each grain is kept, to say
    when a window reaches back further and where its start was rounded."""
    since, until = span(query.window, now, retention)
    step = WINDOWS[query.window][1]
    total = Totals()
    # points on multiples of their width (UTC: 10:30, 04:00, midnight), as hour and day
    # rollups will be; the first and the last may hold only part of theirs
    first = since - since % step
    points = [Totals() for _ in range(math.ceil((until - first) / step))]
    models: dict[str, Totals] = {}
    for row in rows:
        if not since <= row.minute < until:
            continue
        latency, ttfb = histograms(row)
        total.add(row, latency, ttfb)
        points[(row.minute - first) // step].add(row, latency, ttfb)
        model = models.get(row.model)
        if model is None:
            model = models[row.model] = Totals()
        model.add(row, latency, ttfb)
    notes = [PERCENTILE_NOTE, DIMENSIONS_NOTE, LAG_NOTE]
    if retention is not None:
        notes += retention_notes(query.window, since, until, retention)
    return {
        "object": "health",
        "window": query.window,
        "filter": {name: query.filters.get(name) for name in FILTERS},
        "filter_ids": {name: filters.get(name) for name in ("org", "project")},
        "start": iso_minute(since), "end": iso_minute(until),
        **total.whole(),
        "by_model": [{"model": name or None, **t.brief()}
                     for name, t in sorted(models.items(), key=lambda kv: -kv[1].requests)],
        "series": {"bucket_seconds": step * 60,
                   "points": [{"start": iso_minute(first + i * step), **p.brief()}
                              for i, p in enumerate(points)]},
        "notes": notes,
    }


def retention_notes(window: str, since: int, until: int, retention: Retention) -> list[str]:
    notes = []
    if since != until - WINDOWS[window][0]:
        notes.append(f"Minute rollups are kept {retention.minute_days:g} days: this window "
                     f"starts at {iso_minute(since)}, the start of the hour or day it began "
                     "in, and counts whole hours or days there.")
    if until - since > retention.minutes("day"):
        notes.append(f"Day rollups are kept {retention.day_days:g} days: this window's older "
                     "part has no data.")
    return notes


async def read_health(store: Store, query: HealthQuery, *, own_org: str | None = None,
                      retention: Retention | None = None, now: float | None = None
                      ) -> dict[str, Any]:
    """The health answer for ``query`` over the store's rollups: minutes, hours and days."""
    now = time.time() if now is None else now
    filters = await resolve(store, query, own_org)
    since, until = span(query.window, now, retention)
    rows = await RollupRows(store).read(plan(since, until, grain(query.window)), filters)
    return health(rows, query, filters, now=now, retention=retention)
