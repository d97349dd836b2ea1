"""Ray events: buffered, written in batches, bounded (drops counted), found before and after
they are written, pruned after the retention, and a store outage costing events, not answers."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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


async def test_a_store_outage_loses_events_not_requests(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.db")  # no tables
    rays = RayLog(EdgeRecords(store), size=100, keep_days=1)
    rays.record(new_ray(), "deny", visitor(), "r", "rule r")
    await rays.flush()  # logs a warning, raises nothing
    assert rays.dropped == 1 and rays.buffer == []
    await store.aclose()
