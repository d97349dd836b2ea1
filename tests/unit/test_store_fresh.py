"""A new store's schema made at once (gatehouse/store/fresh.py) is the schema the migrations
make, on SQLite and on PostgreSQL; a store that holds anything already is migrated by Alembic."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from gatehouse.store.db import Store, head_revision
from tests.support.services import bare_store, migrate_to

KINDS = ["sqlite", "postgresql"]


def catalogue(conn: Connection, schema: str | None) -> dict[str, Any]:
    """What a schema is, in the store's own words: for every table its columns (type,
    nullability, default), primary key, foreign keys, unique and check constraints, indexes
    (with the index's definition as the store keeps it: its WHERE included) and rows."""
    seen = inspect(conn)

    def said(items: list[Any]) -> list[str]:  # each store has a PostgreSQL schema of its own
        return sorted(repr(item).replace(str(schema), "(schema)") if schema else repr(item)
                      for item in items)

    tables: dict[str, Any] = {}
    for name in seen.get_table_names(schema=schema):
        tables[name] = {
            "columns": {c["name"]: (str(c["type"]), c["nullable"],
                                    said([c.get("default")])[0])
                        for c in seen.get_columns(name, schema=schema)},
            "primary key": seen.get_pk_constraint(name, schema=schema),
            "foreign keys": said(seen.get_foreign_keys(name, schema=schema)),
            "unique": said(seen.get_unique_constraints(name, schema=schema)),
            "checks": said(seen.get_check_constraints(name, schema=schema)),
            # and what it holds: a migration may add rows (0008: the detector's lease)
            "rows": sorted(map(repr, conn.exec_driver_sql(f'SELECT * FROM "{name}"'))),
        }
    if conn.dialect.name == "sqlite":
        found = conn.exec_driver_sql("SELECT tbl_name, name, sql FROM sqlite_master "
                                     "WHERE type = 'index'")
    else:
        found = conn.execute(text("SELECT tablename, indexname, indexdef FROM pg_indexes "
                                  "WHERE schemaname = :s"), {"s": schema})
    for table, index, definition in found:
        # SQLite keeps the statement as it was sent: spaces and quotes aside, the same
        shape = re.sub(r'[\s"]', "", (definition or "").lower())
        if schema:
            shape = shape.replace(f"{schema.lower()}.", "")
        tables[table].setdefault("indexes", {})[index] = shape
    return tables


async def catalogue_of(store: Store) -> dict[str, Any]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(catalogue, store.schema)


async def table_names(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: list(inspect(c).get_table_names(schema=store.schema)))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_new_store_gets_the_schema_the_migrations_make(kind: str,
                                                               tmp_path: Path) -> None:
    (tmp_path / "migrated").mkdir()
    (tmp_path / "fresh").mkdir()
    async for migrated in bare_store(kind, str(tmp_path / "migrated")):
        await migrate_to(migrated, "head")  # Alembic, every migration from the first
        async for fresh in bare_store(kind, str(tmp_path / "fresh")):
            assert await fresh.migrate() is True
            assert await fresh.at_head()
            expected, made = await catalogue_of(migrated), await catalogue_of(fresh)
            assert sorted(made) == sorted(expected)
            for table in expected:
                assert made[table] == expected[table], table
            # and it was made once: a second start finds it at the newest revision
            assert await fresh.migrate() is False
            assert (await catalogue_of(fresh)) == made


@pytest.mark.parametrize("kind", KINDS)
async def test_a_store_with_tables_is_migrated_by_alembic(kind: str, tmp_path: Path) -> None:
    """A store at an older revision (tables, rows) is taken to the newest one migration by
    migration, its rows kept — the fresh schema is for empty stores only."""
    async for store in bare_store(kind, str(tmp_path)):
        await migrate_to(store, "0002_usage_and_limits")
        async with store.engine.begin() as conn:
            await conn.execute(text("INSERT INTO orgs (id, name, tier, created_at) "
                                    "VALUES ('o1', 'acme', 'standard', 1.0)"))
        assert await store.migrate() is True
        assert await store.at_head()
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("SELECT name FROM orgs"))).scalars().all() \
                == ["acme"]
        assert {"request_log", "rollup_day", "status_incidents"} <= set(
            await table_names(store))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failure_half_way_leaves_the_store_empty(kind: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema is made in one transaction: a start that fails after making every table
    (a process killed there) leaves the store empty — SQLite's driver would have committed
    each CREATE on its own — and the next start makes it whole."""
    from gatehouse.store import fresh

    made = fresh.create

    def failing(connection: Connection, schema: str | None, revision: str) -> None:
        made(connection, schema, revision)
        raise RuntimeError("killed")

    async for store in bare_store(kind, str(tmp_path)):
        monkeypatch.setattr(fresh, "create", failing)
        with pytest.raises(RuntimeError, match="killed"):
            await store.migrate()
        assert await table_names(store) == []
        monkeypatch.setattr(fresh, "create", made)
        assert await store.migrate() is True
        assert await store.at_head()


def test_a_new_store_is_made_without_loading_alembic(tmp_path: Path) -> None:
    """Alembic and Mako (~10 MB, ~0.4 s of the first start) stay out of a new store's
    migration; a fresh interpreter tells."""
    probe = (
        "import asyncio, sys\n"
        "from gatehouse.store.db import Store\n"
        "async def main():\n"
        f"    store = Store('sqlite+aiosqlite:///{tmp_path}/store.db')\n"
        "    assert await store.migrate()\n"
        "    assert await store.at_head()\n"
        "    await store.aclose()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    assert head_revision() is not None


def test_the_cli_migrate_command_reports_a_new_store_at_the_newest_revision(
        tmp_path: Path) -> None:
    config = tmp_path / "gatehouse.toml"
    config.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/s.db"\n'
                      f'[identity]\nsecret_file = "{tmp_path}/secret"\n')
    out = subprocess.run([sys.executable, "-m", "gatehouse", "migrate", "--config", str(config)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"store migrated to revision {head_revision()}" in out.stderr

    async def revision() -> list[str]:
        store = Store(f"sqlite+aiosqlite:///{tmp_path}/s.db")
        async with store.engine.connect() as conn:
            found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        await store.aclose()
        return [row[0] for row in found]

    assert asyncio.run(revision()) == [head_revision()]
