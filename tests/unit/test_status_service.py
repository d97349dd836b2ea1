"""The status service over a real store (SQLite, migrated) with a controllable clock: rollup
rows of failing traffic open one automatic incident, the public documents say so in
Statuspage's format (and the doctor's reader understands them), recovery resolves it with a
drafted postmortem; one lease holder per cluster; web-only failures mark web, not api."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import orjson
import pytest

from gatehouse import turns as turns_module
from gatehouse.context import RequestContext
from gatehouse.doctor.statuspage import read_summary
from gatehouse.status.page import render_page
from gatehouse.status.public import handlers
from gatehouse.status.service import StatusService
from gatehouse.status.statuspage import View, documents
from gatehouse.store.db import Store
from gatehouse.store.rollups import RollupRows
from tests.support.loops import counted_turns
from tests.support.services import migrated_store
from tests.unit.conftest import make_settings

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60
FAST = {"tick_seconds": 1, "open_after_seconds": 20, "resolve_after_seconds": 30}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The same tests on both stores: the lease's conditional UPDATE and the daily bars'
    GROUP BY on integer division are SQL each must get right."""
    async for s in migrated_store(request.param, str(tmp_path)):
        yield s


def service(store: Store, clock: Clock, tmp_path: Path, **status: Any) -> StatusService:
    settings = make_settings(tmp_path, status={**FAST, **status})
    return StatusService(settings, store, clock)


async def traffic(store: Store, minute: float, *, component: str = "api",
                  model: str = "demo", ok: int = 200, failed: int = 0,
                  error_class: str = "server_error") -> None:
    hist = orjson.dumps({"20": 1}).decode()
    rows = [(int(minute // 60), component, model, "standard", "org_1", "proj_1", "ok", ok,
             0, 0, 0.0, hist, hist)]
    if failed:
        rows.append((int(minute // 60), component, model, "standard", "org_1", "proj_1",
                     error_class, failed, 0, 0, 0.0, hist, "{}"))
    await RollupRows(store).add(rows)


async def run(svc: StatusService, clock: Clock, seconds: float, step: float = 5.0) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        await svc.tick()


async def test_failures_open_an_automatic_incident_and_recovery_resolves_it(
        store: Store, tmp_path: Path) -> None:
    clock = Clock()
    svc = service(store, clock, tmp_path)
    await traffic(store, T0 - 60)
    await traffic(store, T0, ok=160, failed=40)  # 20 % failing
    await run(svc, clock, 40)
    found = await svc.records.open_automatic()
    assert found is not None
    assert found.row.automatic and found.row.acknowledged_at is None
    assert found.row.impact == "major" and found.row.status == "investigating"
    assert set(found.components) == {"api", "demo"}  # not web, not login
    assert found.figures["peak_error_rate"] == pytest.approx(40 / 400, abs=0.11)
    assert found.updates[0].body.startswith("Automatic:")

    docs = (await svc.refresh()).answers
    summary = orjson.loads(docs["/api/v2/summary.json"].body)
    assert summary["status"] == {"indicator": "major", "description": "Partial System Outage"}
    states = {c["name"]: c["status"] for c in summary["components"]}
    assert states["API"] == "partial_outage" and states["Web"] == "operational"
    assert states["Models"] == "partial_outage"  # the group: its worst member
    [incident] = summary["incidents"]
    assert incident["impact"] == "major" and incident["status"] == "investigating"
    assert {c["name"] for c in incident["components"]} == {"API", "demo"}
    assert incident["incident_updates"][0]["affected_components"] is not None
    result = read_summary("http://gw/api/v2/summary.json", summary, ("demo",))
    assert result.trouble and result.ours and result.indicator == "major"
    assert b"Elevated errors on" in docs["/status"].body
    days = await svc.history.refresh(clock.now)  # the daily bars, summed in the store
    today = days[("api", int(T0 // 86400))]
    assert (today.requests, today.faults) == (400, 40) and today.uptime == 0.9
    assert ("web", int(T0 // 86400)) not in days  # no requests: no data, not "up"
    # today's bar of api and of demo (90 % up: far below 99.5 %), and the legend's
    assert docs["/status"].body.count(b'class="bar down"') == 3

    await svc.incidents.acknowledge(found.row.id)
    for minute in range(1, 8):  # healthy again
        await traffic(store, T0 + minute * 60)
    await run(svc, clock, 7 * 60, step=15)
    assert await svc.records.open_automatic() is None
    done = await svc.records.get(found.row.id)
    assert done is not None and done.row.status == "resolved"
    assert done.row.acknowledged_at is not None
    draft = done.row.postmortem or ""
    assert "Peak error rate:" in draft and "Duration:" in draft
    assert "Not affected: Web, Login" in draft
    summary = orjson.loads((await svc.refresh()).answers["/api/v2/summary.json"].body)
    assert summary["status"]["indicator"] == "none" and summary["incidents"] == []


async def test_one_detector_for_the_cluster(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    first, second = service(store, clock, tmp_path), service(store, clock, tmp_path)
    await traffic(store, T0, ok=100, failed=100)
    for _ in range(10):
        clock.now += 5
        await first.tick()
        await second.tick()
    assert first.leader and not second.leader
    assert len(await first.records.listing(kind="incident")) == 1
    await first.aclose()  # gives the lease up: the other takes over where it left off
    clock.now += 5
    await second.tick()
    assert second.leader
    assert second.detector.statuses["api"] == "major_outage"
    assert len(await first.records.listing(kind="incident")) == 1


async def test_web_failures_mark_web_not_api(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    svc = service(store, clock, tmp_path)
    await traffic(store, T0)
    await traffic(store, T0, component="web", model="", ok=50, failed=50,
                  error_class="unavailable")
    await run(svc, clock, 40)
    found = await svc.records.open_automatic()
    assert found is not None and found.components == ["web"]
    assert svc.detector.statuses["api"] == "operational"


async def test_client_errors_and_quota_are_not_the_services_fault(store: Store,
                                                                  tmp_path: Path) -> None:
    clock = Clock()
    svc = service(store, clock, tmp_path)
    for kind in ("client_error", "quota", "rate_limited", "auth", "client_gone"):
        await traffic(store, T0, ok=10, failed=100, error_class=kind)
    await run(svc, clock, 60)
    assert await svc.records.open_automatic() is None
    assert set(svc.detector.statuses.values()) == {"operational"}


async def test_maintenance_shows_and_suppresses(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    svc = service(store, clock, tmp_path)
    m = await svc.incidents.schedule("Database upgrade", "Planned.", T0, T0 + 600,
                                    ["api", "demo"])
    docs = (await svc.refresh()).answers
    active = orjson.loads(docs["/api/v2/scheduled-maintenances/active.json"].body)
    assert [x["id"] for x in active["scheduled_maintenances"]] == [m.row.id]
    assert active["scheduled_maintenances"][0]["status"] == "in_progress"
    summary = orjson.loads(docs["/api/v2/summary.json"].body)
    assert summary["status"]["indicator"] == "maintenance"
    await traffic(store, T0, ok=0, failed=300)
    await run(svc, clock, 60)
    assert await svc.records.open_automatic() is None
    assert svc.detector.statuses["api"] == "under_maintenance"
    upcoming = orjson.loads(docs["/api/v2/scheduled-maintenances/upcoming.json"].body)
    assert upcoming["scheduled_maintenances"] == []
    clock.now = T0 + 700  # past its end: completed, and no longer among the live ones
    await svc.tick()
    assert await svc.records.listing(kind="maintenance", live_only=True) == []
    done = await svc.records.get(m.row.id)
    assert done is not None and done.row.status == "completed"


async def test_the_snapshot_is_served_while_the_store_is_down(store: Store,
                                                              tmp_path: Path) -> None:
    clock = Clock()
    svc = service(store, clock, tmp_path)
    first = await svc.refresh()
    await store.aclose()
    broken = Store("postgresql+asyncpg://postgres@127.0.0.1:1/test")  # nothing listens
    svc.records.store = broken
    with pytest.raises(OSError):
        await svc.refresh()
    assert svc.snapshot is first
    await broken.aclose()
    # the failed refresh let go of the lock that serialises refreshes: back, the next one runs
    svc.records.store = store
    clock.now += 5
    again = await asyncio.wait_for(svc.refresh(), 30)
    assert again is svc.snapshot and again is not first


async def test_before_any_snapshot_the_answer_is_a_503(tmp_path: Path) -> None:
    broken = Store("postgresql+asyncpg://postgres@127.0.0.1:1/test")  # nothing listens
    svc = StatusService(make_settings(tmp_path, status={"tick_seconds": 600,
                                                        "snapshot_seconds": 300}), broken)
    await svc.start()
    try:
        ctx = RequestContext("req_x", "GET", "/api/v2/summary.json", {}, None, None)
        reply = await handlers(svc)["/api/v2/summary.json"](ctx)
        assert reply.status == 503 and reply.headers["retry-after"] == "5"
        assert orjson.loads(reply.body)["error"]["code"] == "status_unavailable"
    finally:
        await svc.aclose()
        await broken.aclose()


async def failing(store: Store, tmp_path: Path, **status: Any
                  ) -> tuple[StatusService, Clock, Any]:
    """A service whose API has failed 20 % for 40 s: its automatic incident open."""
    clock = Clock()
    svc = service(store, clock, tmp_path, **status)
    await traffic(store, T0 - 60)
    await traffic(store, T0, ok=160, failed=40)
    await run(svc, clock, 40)
    first = await svc.records.open_automatic()
    assert first is not None
    return svc, clock, first


async def test_an_incident_an_operator_resolves_is_not_reopened_while_it_still_fails(
        store: Store, tmp_path: Path) -> None:
    """The operator resolved the automatic incident though the API still fails (they know,
    and decided): no new automatic incident until it recovers or gets worse; after it
    recovers, a new failure opens one as usual."""
    svc, clock, first = await failing(store, tmp_path)
    await svc.incidents.resolve(first.row.id, "Known: a bad deploy, rolling back.")
    for minute in range(1, 4):  # still failing just as much
        await traffic(store, T0 + minute * 60, ok=160, failed=40)
    await run(svc, clock, 3 * 60, step=15)
    assert await svc.records.open_automatic() is None, "reopened against the operator"
    assert svc.detector.statuses["api"] != "operational"

    minute = 4
    while svc.detector.statuses["api"] != "operational":  # healthy again, until recovered
        assert minute < 120, "never recovered"
        await traffic(store, T0 + minute * 60)
        await run(svc, clock, 60, step=15)
        minute += 1
    assert await svc.records.open_automatic() is None
    for later in range(minute, minute + 3):  # a new failure after the recovery: a new one
        await traffic(store, T0 + later * 60, ok=160, failed=40)
    await run(svc, clock, 3 * 60, step=15)
    second = await svc.records.open_automatic()
    assert second is not None and second.row.id != first.row.id


async def test_an_incident_the_recovery_resolves_does_not_hold_the_next_failure(
        store: Store, tmp_path: Path) -> None:
    svc, clock, first = await failing(store, tmp_path, resolve_after_seconds=10)
    for minute in range(1, 8):
        await traffic(store, T0 + minute * 60)
    await run(svc, clock, 7 * 60, step=15)
    assert await svc.records.open_automatic() is None  # resolved by the recovery
    await traffic(store, T0 + 8 * 60, ok=160, failed=40)
    await traffic(store, T0 + 9 * 60, ok=160, failed=40)
    await run(svc, clock, 2 * 60, step=15)
    second = await svc.records.open_automatic()
    assert second is not None and second.row.id != first.row.id


async def test_a_held_component_that_gets_worse_opens_a_new_incident(
        store: Store, tmp_path: Path) -> None:
    svc, clock, first = await failing(store, tmp_path)
    assert svc.detector.statuses["api"] == "partial_outage"
    await svc.incidents.resolve(first.row.id)
    for minute in range(1, 4):  # now everything fails: worse than what was resolved
        await traffic(store, T0 + minute * 60, ok=0, failed=200)
    await run(svc, clock, 3 * 60, step=15)
    assert svc.detector.statuses["api"] == "major_outage"
    second = await svc.records.open_automatic()
    assert second is not None and second.row.id != first.row.id


async def test_the_daily_bars_reach_back_past_the_minute_rows(store: Store,
                                                              tmp_path: Path) -> None:
    """90 days of bars, though minute rows are kept 14: days read from the compacted rows
    (days, hours, and minutes not folded yet), each request counted once."""
    from gatehouse.telemetry.compaction import Compactor, Retention

    clock = Clock()
    svc = service(store, clock, tmp_path)
    old, recent = T0 - 30 * 86400, T0 - 2 * 86400
    await traffic(store, old, ok=90, failed=10)
    await traffic(store, old + 3600, ok=100)
    await traffic(store, recent, ok=45, failed=5)
    await traffic(store, T0, ok=7)

    def bars(days: dict[tuple[str, int], Any]) -> dict[int, tuple[int, int]]:
        return {d: (v.requests, v.faults) for (c, d), v in days.items() if c == "api"}

    expected = {int(old // 86400): (200, 10), int(recent // 86400): (50, 5),
                int(T0 // 86400): (7, 0)}
    assert bars(await svc.history.refresh(clock.now)) == expected  # minute rows alone
    compactor = Compactor(RollupRows(store), Retention(14, 100, 400), clock=lambda: clock.now)
    await compactor.compact()  # minutes → hours, hours → days: in two places, counted once
    await compactor.compact()
    assert bars(await service(store, clock, tmp_path).history.refresh(clock.now)) == expected
    await compactor.prune()  # the minute rows of 30 days ago are gone: the day rows remain
    assert bars(await service(store, clock, tmp_path).history.refresh(clock.now)) == expected


async def test_a_far_future_time_in_the_store_does_not_stop_the_page(store: Store,
                                                                     tmp_path: Path) -> None:
    # as the admin API stored them before it bounded them: year 10000 and 10**30 raised in
    # datetime, every snapshot failed, and a later incident never reached the page
    clock = Clock()
    svc = service(store, clock, tmp_path)
    for end in (253_402_300_800, 10**30):
        await svc.incidents.schedule("Forever", "Planned.", T0 + 60, end, ["api"])
    later = await svc.incidents.open("Errors", "Looking.")
    answers = (await svc.refresh()).answers
    summary = orjson.loads(answers["/api/v2/summary.json"].body)
    assert [i["id"] for i in summary["incidents"]] == [later.row.id]
    assert {m["scheduled_until"] for m in summary["scheduled_maintenances"]} == {
        "9999-12-31T23:59:59.000Z"}
    assert {"/status", "/status/history.atom", "/status/history.rss"} <= set(answers)


async def test_the_feeds_stay_xml_with_control_characters_in_the_text(store: Store,
                                                                      tmp_path: Path) -> None:
    # text pasted from a terminal (the CLI takes it; the admin API took it before it refused
    # it): XML 1.0 cannot hold ESC even escaped, and one made both feeds unreadable
    svc = service(store, Clock(), tmp_path)
    await svc.incidents.open("Bell\u0007", "psql: \u001b[31mERROR\u001b[0m\ttab\u000bvt")
    answers = (await svc.refresh()).answers
    ns = {"a": "http://www.w3.org/2005/Atom"}
    atom = ElementTree.fromstring(answers["/status/history.atom"].body)
    [entry] = atom.findall("a:entry", ns)
    assert entry.findtext("a:title", namespaces=ns) == "Bell"
    assert "psql: [31mERROR[0m\ttabvt" in (entry.findtext("a:content", namespaces=ns) or "")
    rss = ElementTree.fromstring(answers["/status/history.rss"].body)
    [item] = rss.findall("channel/item")
    assert "psql: [31mERROR[0m" in (item.findtext("description") or "")


async def test_the_page_is_made_in_turns_and_the_same_as_at_once(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker rebuilds the page every few seconds: made at once it held every request
    of the worker ~5 ms (90 days of bars per component, bench/stages.py). It is made a piece
    at a time with the event loop free in between — and the same page as made at once."""
    clock = Clock()
    svc = service(store, clock, tmp_path)
    await traffic(store, T0 - 60)
    await traffic(store, T0, ok=160, failed=40)
    await run(svc, clock, 40)
    await svc.refresh()
    now = clock.now
    view = View(now, svc.settings.page_name, svc.url, svc.components,
                await svc.records.component_states(), await svc.records.listing(), svc.started)
    summary = documents(view)["summary.json"]
    days = await svc.history.refresh(now)
    args = (view, summary, days, svc.settings.history_days, svc.keep_days)
    monkeypatch.setattr(turns_module, "TURN_SECONDS", 0.0)  # a turn after every piece
    async with counted_turns() as turns:
        html = await render_page(*args)
    assert b"Elevated errors on" in html.encode() and html.count('class="bar down"') == 3
    # (1,928 here: the page's pieces — 90 bars and their titles per component …)
    assert turns.count > 1000
    monkeypatch.setattr(turns_module, "TURN_SECONDS", 3600.0)  # all at once
    assert await render_page(*args) == html


async def test_refreshes_at_once_give_the_newest_page(store: Store, tmp_path: Path) -> None:
    """An operator's change refreshes the page at once (admin API), beside the periodic
    refresh: the one that read the store first must not finish last and put the older page
    back (nor announce its incidents to the webhooks as changes again)."""
    clock = Clock()
    svc = service(store, clock, tmp_path)
    await svc.refresh()
    gate = asyncio.Event()
    history = svc.history.refresh
    calls = 0

    async def slow_history(now: float) -> Any:  # the first refresh waits after its reads
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return await history(now)

    svc.history.refresh = slow_history  # type: ignore[method-assign]
    periodic = asyncio.create_task(svc.refresh())
    while calls < 1:
        await asyncio.sleep(0)
    opened = await svc.incidents.open("Elevated errors", "We are looking into it.",
                                      components={"api": "partial_outage"})
    operator = asyncio.create_task(svc.refresh())
    # (unserialised, the operator's refresh ends here, before the periodic one; serialised, it
    # waits for it: the wait runs out)
    await asyncio.wait({operator}, timeout=1.0)
    gate.set()
    await asyncio.gather(periodic, operator)
    assert svc.snapshot is not None
    summary = orjson.loads(svc.snapshot.answers["/api/v2/summary.json"].body)
    assert [i["id"] for i in summary["incidents"]] == [opened.row.id]
