"""Health views over minute rollups: hand-made rows in, the window's numbers out — merged
percentiles within one bucket of the exact value of the raw samples, error classes and shares,
a series that adds up to the window; the query's checks (unknown names, key, windows); and the
store query on SQLite and PostgreSQL, where filters isolate one model / tier / project and a
customer's scope makes another org's project "not found"."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from gatehouse.errors import InvalidRequest, NotFound
from gatehouse.store.db import Store
from gatehouse.store.rollups import RollupRows
from gatehouse.store.tables import Org, Project, RollupMinute
from gatehouse.telemetry.compaction import Retention
from gatehouse.telemetry.health import (
    WINDOWS,
    HealthQuery,
    health,
    iso_minute,
    parse_query,
    read_health,
    span,
)
from gatehouse.telemetry.histogram import Histogram
from tests.unit.test_histogram import exact, within_one_bucket
from tests.unit.test_request_log import store  # noqa: F401  (the fixture)

NOW = 1_796_135_330.0  # 30 s into a minute
MINUTE = int(NOW // 60)


def row(minute: int, latencies: list[float], *, model: str = "m1", tier: str = "standard",
        org: str = "org_a", project: str = "proj_a", error_class: str = "ok",
        component: str = "api", ttfb: list[float] | None = None, tokens: tuple[int, int] = (0, 0),
        wait_ms: float = 0.0) -> RollupMinute:
    lat, first = Histogram(), Histogram()
    for v in latencies:
        lat.add(v)
    for v in ttfb or []:
        first.add(v)
    return RollupMinute(
        minute=minute, component=component, model=model, tier=tier, org=org, project=project,
        error_class=error_class, requests=len(latencies), prompt_tokens=tokens[0],
        completion_tokens=tokens[1], admission_wait_ms=wait_ms,
        latency=orjson.dumps(lat.to_json()).decode(), ttfb=orjson.dumps(first.to_json()).decode())


def as_tuple(r: RollupMinute) -> tuple[Any, ...]:
    return (r.minute, r.component, r.model, r.tier, r.org, r.project, r.error_class, r.requests,
            r.prompt_tokens, r.completion_tokens, r.admission_wait_ms, r.latency, r.ttfb)


def test_merged_percentiles_classes_and_series() -> None:
    rng = random.Random(13)
    rows, latencies, ttfbs = [], [], []
    classes = {"ok": 0, "unavailable": 0, "timeout": 0}
    for m in range(60):  # a row per minute and class, as replicas write them
        for cls in classes:
            n = rng.randint(1, 40) if cls == "ok" else rng.randint(0, 3)
            values = [rng.lognormvariate(4 if cls == "ok" else 6, 1) for _ in range(n)]
            firsts = [v / 3 for v in values]
            if values:
                rows.append(row(MINUTE - 59 + m, values, error_class=cls, ttfb=firsts,
                                tokens=(2 * n, 3 * n), wait_ms=0.5 * n))
            classes[cls] += n
            latencies += values
            ttfbs += firsts
    rows.append(row(MINUTE - 60, [1.0] * 100))  # just before the window: not counted
    view = health(rows, HealthQuery("1h"), {}, now=NOW)
    total = len(latencies)
    assert view["requests"] == total
    assert view["errors"] == classes["unavailable"] + classes["timeout"]
    assert view["error_rate"] == pytest.approx(view["errors"] / total, abs=1e-6)
    for cls, n in classes.items():
        assert view["error_classes"][cls] == {"count": n, "share": round(n / total, 6)}
    assert view["error_classes"]["client_gone"] == {"count": 0, "share": 0.0}
    for q in (50, 95, 99):
        assert within_one_bucket(view["latency_ms"][f"p{q}"], exact(latencies, q)), q
        assert within_one_bucket(view["ttfb_ms"][f"p{q}"], exact(ttfbs, q)), q
    assert view["tokens"] == {"prompt": 2 * total, "completion": 3 * total, "total": 5 * total}
    assert view["admission_wait_ms"]["mean"] == pytest.approx(0.5)
    points = view["series"]["points"]
    assert view["series"]["bucket_seconds"] == 60 and len(points) == 60
    assert sum(p["requests"] for p in points) == total
    assert sum(p["errors"] for p in points) == view["errors"]
    assert points[-1]["start"] == "2026-12-01T14:28:00Z" == iso_minute(MINUTE)
    assert view["end"] == iso_minute(MINUTE + 1) and view["start"] == iso_minute(MINUTE - 59)
    assert view["by_model"] == [{"model": "m1", **{k: view[k] for k in (
        "requests", "errors", "error_rate", "latency_ms")}}]
    assert any("√2" in note for note in view["notes"])


@pytest.mark.parametrize("window", list(WINDOWS))
def test_every_window_has_its_series(window: str) -> None:
    minutes, step = WINDOWS[window]
    since, _ = span(window, NOW, Retention())  # 30d, 90d: from the hour they begin in
    assert since == MINUTE + 1 - minutes or (minutes > 14 * 1440 and since % 60 == 0)
    rows = [row(MINUTE, [5.0]), row(since, [7.0], model="m2"),
            row(since - 1, [9.0])]  # the last: one minute too old
    view = health(rows, HealthQuery(window), {}, now=NOW, retention=Retention())
    points = view["series"]["points"]
    assert len(points) in (-(-minutes // step), -(-minutes // step) + 1)
    assert 5 <= len(points) <= 91
    starts = [int(p["start"][11:13]) * 60 + int(p["start"][14:16]) for p in points]
    assert all(m % step == 0 for m in starts) or step == 1440  # aligned to their width (UTC)
    assert all(p["start"].endswith("T00:00:00Z") for p in points) or step != 1440
    assert view["requests"] == 2 and points[0]["requests"] == 1 and points[-1]["requests"] == 1
    assert [m["model"] for m in view["by_model"]] == ["m1", "m2"]
    assert any("kept 14 days" in n for n in view["notes"]) == (minutes > 14 * 1440)


def test_an_empty_window() -> None:
    view = health([], HealthQuery("5m", {"model": "nobody"}), {}, now=NOW)
    assert view["requests"] == 0 and view["error_rate"] is None
    assert view["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert view["filter"]["model"] == "nobody" and view["filter"]["tier"] is None
    assert [p["requests"] for p in view["series"]["points"]] == [0] * 5


@pytest.mark.parametrize(("pairs", "param", "words"), [
    ([("key", "key_1")], "key", "not per API key"),
    ([("endpoint", "chat.completions")], "endpoint", "per component"),
    ([("colour", "red")], "colour", "Unknown parameter"),
    ([("window", "2h")], "window", "5m, 15m, 1h, 6h, 24h, 7d, 30d, 90d"),
    ([("model", "a"), ("model", "b")], "model", "more than once"),
    ([("model", "")], "model", "printable"),
    # found by schemathesis (tests/robust): a typo read as "no traffic" (200, all zeros)
    ([("component", "AAA")], "component", "api, web, login, admin"),
])
def test_bad_queries_name_their_param(pairs: list[tuple[str, str]], param: str,
                                      words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_query(pairs)
    assert caught.value.param == param and words in caught.value.message


def test_a_good_query() -> None:
    q = parse_query([("model", "demo"), ("tier", "priority"), ("window", "24h")])
    assert q == HealthQuery("24h", {"model": "demo", "tier": "priority"})
    assert parse_query([]).window == "1h"


async def test_store_query_filters_and_scopes(store: Store) -> None:  # noqa: F811
    async with store.session() as s:
        s.add_all([Org(id="org_a", name="acme", tier="standard", created_at=0.0),
                   Org(id="org_b", name="bravo", tier="standard", created_at=0.0),
                   Project(id="proj_a", org_id="org_a", name="bot", created_at=0.0),
                   Project(id="proj_a2", org_id="org_a", name="web", created_at=0.0),
                   Project(id="proj_b", org_id="org_b", name="bot", created_at=0.0)])
        await s.commit()
    now = time.time()
    minute = int(now // 60)
    rows = [row(minute, [10.0] * 3),
            row(minute, [20.0] * 5, model="m2"),
            row(minute - 2, [30.0] * 7, tier="priority", error_class="at_capacity"),
            row(minute, [40.0] * 11, project="proj_a2"),
            row(minute, [50.0] * 13, org="org_b", project="proj_b"),
            row(minute - 30, [60.0] * 17)]  # outside 15m
    await RollupRows(store).add([as_tuple(r) for r in rows])

    async def count(own: str | None = None, window: str = "15m", **filters: str) -> int:
        view = await read_health(store, HealthQuery(window, filters), own_org=own, now=now)
        return int(view["requests"])

    assert await count() == 3 + 5 + 7 + 11 + 13
    assert await count(window="1h") == 3 + 5 + 7 + 11 + 13 + 17
    assert await count(model="m2") == 5
    assert await count(tier="priority") == 7
    assert await count(project="proj_a2") == 11
    assert await count(project="acme/web") == 11
    assert await count(org="bravo") == 13 and await count(org="org_b") == 13
    assert await count(model="m1", tier="standard", project="acme/bot") == 3
    with pytest.raises(InvalidRequest, match="org/project"):
        await count(project="bot")  # two orgs have one
    # a customer of org_a: their org only, by name or id; org_b's is "not found"
    assert await count("org_a") == 3 + 5 + 7 + 11
    assert await count("org_a", project="bot") == 3 + 5 + 7
    view = await read_health(store, HealthQuery("15m", {"tier": "priority"}), own_org="org_a",
                             now=now)
    assert view["error_classes"]["at_capacity"]["count"] == 7 and view["error_rate"] == 1.0
    words = []
    for filters in ({"project": "proj_b"}, {"project": "nothing"}, {"org": "bravo"},
                    {"org": "nothing"}, {"project": "bravo/bot"}):
        with pytest.raises(NotFound) as caught:
            await count("org_a", **filters)
        value = next(iter(filters.values()))
        words.append(caught.value.message.replace(value, "…"))
    assert len(set(words)) == 2  # one wording for "org", one for "project"
