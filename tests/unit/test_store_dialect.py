"""The store's upserts (usage history, limit overrides) in each dialect, and a worker on SQLite
without PostgreSQL's dialect: importing it loads its four drivers' modules (~2 MB of RSS per
worker). Checked in a fresh interpreter's ``sys.modules``, not with RSS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from gatehouse.quota.overrides import Overrides
from gatehouse.store.db import Store
from gatehouse.store.tables import LimitOverride, UsageDaily
from gatehouse.store.usage import UsageBook
from tests.support.services import migrated_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_usage_and_overrides_upsert_in_either_dialect(kind: str, tmp_path: Path) -> None:
    async for store in migrated_store(kind, str(tmp_path)):
        await upserts(store)


async def upserts(store: Store) -> None:
    book = UsageBook(store)
    for prompt in (3, 4):  # the second flush adds to the first day's row
        book.record(86400.0, "o", "p", "k", None, "m", prompt, 1, gateway_counted=True)
        await book.flush()
    overrides = Overrides(store)
    await overrides.set("org", "o", "requests_per_minute", 10)
    await overrides.set("org", "o", "requests_per_minute", 20)  # replaces it
    async with store.session() as s:
        rows = (await s.scalars(select(UsageDaily))).all()
        limits = (await s.scalars(select(LimitOverride))).all()
    assert [(r.day, r.requests, r.prompt_tokens, r.completion_tokens, r.gateway_counted)
            for r in rows] == [("1970-01-02", 2, 7, 2, 2)]
    assert [(r.scope, r.scope_id, r.field, r.value) for r in limits] == [
        ("org", "o", "requests_per_minute", 20)]


PROBE = """
import asyncio, json, sys
import gatehouse.app, gatehouse.cli.serving
from gatehouse.quota.overrides import Overrides
from gatehouse.store.db import Store
from gatehouse.store.usage import UsageBook

async def main():
    store = Store(f"sqlite+aiosqlite:///{sys.argv[1]}/store.db")  # migrated (Alembic, as a
    # worker's migration in its own process, imports every dialect)
    book = UsageBook(store)
    book.record(0.0, "o", "p", "k", None, "m", 1, 1)
    await book.flush()
    await Overrides(store).set("org", "o", "requests_per_minute", 10)
    written = len((await Overrides(store).load())[("org", "o")])
    await store.aclose()
    return written

written = asyncio.run(main())
print(json.dumps({"written": written, "modules": sorted(sys.modules)}))
"""


def test_a_sqlite_worker_does_not_import_the_postgresql_dialect(tmp_path: Path) -> None:
    async def migrate() -> None:
        migrated = Store(f"sqlite+aiosqlite:///{tmp_path}/store.db")
        await migrated.migrate()
        await migrated.aclose()

    asyncio.run(migrate())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["written"] == 1  # the upserts ran
    modules = set(report["modules"])
    assert "sqlalchemy.dialects.sqlite.dml" in modules
    loaded = sorted(m for m in modules if m.startswith(("sqlalchemy.dialects.postgresql",
                                                        "asyncpg", "psycopg", "pg8000")))
    assert loaded == []
