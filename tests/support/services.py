"""The real PostgreSQL and Redis the cluster paths are tested against (started by .ci/run).

Each test gets its own PostgreSQL schema (created, migrated and dropped) and its own key
namespace in Redis; nothing is shared between tests or left behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.store.db import Store

PG_URL = os.environ.get("GATEHOUSE_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GATEHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def pg_schema() -> AsyncIterator[str]:
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def migrated_store(kind: str, tmp: str) -> AsyncIterator[Store]:
    if kind == "sqlite":
        store = Store(f"sqlite+aiosqlite:///{tmp}/store.db")
        await store.migrate()
        yield store
        await store.aclose()
        return
    async for schema in pg_schema():
        store = Store(PG_URL, schema=schema)
        await store.migrate()
        yield store
        await store.aclose()


def psql(sql: str) -> None:
    """One statement through ``psql``, as the PostgreSQL superuser of ``PG_URL``."""
    url = PG_URL.replace("+asyncpg", "").replace("postgresql://", "")
    user, _, rest = url.partition("@")
    hostport, _, db = rest.partition("/")
    host, _, port = hostport.partition(":")
    subprocess.run(["psql", "-h", host, "-p", port or "5432", "-U", user, "-d", db, "-qc", sql],
                   check=True, capture_output=True)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A database of its own (for gateway processes, which migrate it themselves), dropped
    afterwards; yields its URL."""
    name = f"gh_e2e_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        psql(f"DROP DATABASE {name} WITH (FORCE)")
