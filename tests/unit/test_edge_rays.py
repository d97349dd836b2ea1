"""Ray events: buffered, written in batches, bounded (drops counted), found before and after
they are written, pruned after the retention, and a store outage costing events, not answers."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event

from gatehouse.edge.rays import RayLog, new_ray
from gatehouse.edge.visitor import Visitor
from gatehouse.store.db import Store
from gatehouse.store.edge import EdgeRecords
from tests.support.services import migrated_store


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for s in migrated_store(request.param, str(tmp_path)):
        yield s


def visitor() -> Visitor:
    return Visitor(ipaddress.ip_address("2001:db8::7"), "2001:db8::/64", "GET", "/x" * 400,
                   {"user-agent": "u" * 900}, False, True)


async def test_rays_are_batched_bounded_and_found(store: Store) -> None:
    drops: list[float] = []
    rays = RayLog(EdgeRecords(store), size=3, keep_days=1, on_drop=drops.append)
    ids = [new_ray() for _ in range(5)]
    assert len(set(ids)) == 5 and all(len(r) == 16 and int(r, 16) >= 0 for r in ids)
    for ray in ids:
        rays.record(ray, "deny", visitor(), "rule-x", "rule rule-x")
    assert rays.dropped == 2 and drops == [1, 1]
    before = store.queries
    assert (await rays.find(ids[0]))["ip"] == "2001:db8::7"  # from the buffer: no SQL
    assert store.queries == before
    await rays.flush()
    assert rays.buffer == []
    found = await rays.find(ids[2])
    assert found is not None and found["network"] == "2001:db8::/64"
    assert len(found["path"]) == 512 and len(found["user_agent"]) == 512  # cut to the column
    assert await rays.find(ids[4]) is None  # dropped
    records = EdgeRecords(store)
    assert await records.prune_rays(time.time() + 1) == 3
    assert await rays.find(ids[2]) is None


async def test_a_flood_of_denials_is_written_in_batches_not_chased(store: Store) -> None:
    """Events that arrive while a batch is written wait for the next flush, and stay findable
    throughout (a flush that chased a flood wrote a few rows per transaction, non-stop)."""
    rays = RayLog(EdgeRecords(store), size=100_000, keep_days=1, per_address=10**9)
    first = [new_ray() for _ in range(200)]
    for ray in first:
        rays.record(ray, "deny", visitor(), "r", "rule r")
    begun: list[int] = []  # transactions begun; each insert notes which one it is in
    inserts: list[int] = []
    for engine in store.sync_engines:
        event.listen(engine, "begin", lambda *_: begun.append(1))
        event.listen(engine, "before_cursor_execute",
                     lambda *a: inserts.append(len(begun)) if "INTO edge_rays" in a[2] else None)
    found_during: list[object] = []

    async def flood() -> None:
        for _ in range(500):
            rays.record(new_ray(), "deny", visitor(), "r", "rule r")
            found_during.append(await rays.find(first[100]))  # being written: still found
            await asyncio.sleep(0)

    flooding = asyncio.create_task(flood())
    await rays.flush()
    # one batch, one transaction (of a few statements: store/db.py's chunks_of)
    assert 1 <= len(inserts) <= 9 and len(set(inserts)) == 1
    assert rays.buffer  # what arrived meanwhile waits for the next flush
    await flooding
    assert all(f is not None for f in found_during)
    await rays.flush()
    assert rays.buffer == [] and rays.dropped == 0


async def test_a_store_outage_loses_events_not_requests(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.db")  # no tables
    rays = RayLog(EdgeRecords(store), size=100, keep_days=1)
    rays.record(new_ray(), "deny", visitor(), "r", "rule r")
    await rays.flush()  # logs a warning, raises nothing
    assert rays.dropped == 1 and rays.buffer == []
    await store.aclose()


async def test_a_hammering_address_has_only_its_first_rays_stored_per_window(
        tmp_path: Path) -> None:
    """Thousands of denials a second from one client must not become thousands of rows a
    second; a person (another address) in the same flood still has every Ray ID stored."""
    now = [100.0]
    drops: list[float] = []
    rays = RayLog(EdgeRecords(None), size=10_000, keep_days=1,  # type: ignore[arg-type]
                  per_address=20, on_drop=drops.append, clock=lambda: now[0])
    bot = visitor()
    person = Visitor(ipaddress.ip_address("192.0.2.8"), "192.0.2.0/24", "GET", "/login", {},
                     False, True)
    for i in range(5000):
        rays.record(new_ray(), "deny", bot, "r", "rule r")
        if i % 1000 == 0:
            rays.record(new_ray(), "deny", person, "r", "rule r")
    assert len(rays.buffer) == 20 + 5 and rays.dropped == 4980 and sum(drops) == 4980
    now[0] += 10.0  # the next window: the bot's next denials are stored again, 20 of them
    for _ in range(30):
        rays.record(new_ray(), "deny", bot, "r", "rule r")
    assert len(rays.buffer) == 45
