"""The real PostgreSQL and Redis the cluster paths are tested against (started by .ci/run).

Each test gets its own PostgreSQL schema (created, migrated and dropped) and its own key
namespace in Redis; nothing is shared between tests or left behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

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
