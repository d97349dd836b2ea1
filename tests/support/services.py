"""The real PostgreSQL and Redis the cluster paths are tested against (started by .ci/run).

Each test gets its own PostgreSQL schema (created, migrated and dropped) and its own key
namespace in Redis; nothing is shared between tests or left behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.store.db import Store, alembic_config
from tests.support.procs import stop

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


async def bare_store(kind: str, tmp: str) -> AsyncIterator[Store]:
    """An empty store of ``kind``, not migrated: for a test that takes it from one revision
    to another (:func:`migrate_to`). Closed afterwards."""
    if kind == "sqlite":
        store = Store(f"sqlite+aiosqlite:///{tmp}/store.db")
        yield store
        await store.aclose()
        return
    async for schema in pg_schema():
        store = Store(PG_URL, schema=schema)
        yield store
        await store.aclose()


async def migrate_to(store: Store, revision: str, *, down: bool = False) -> None:
    """Upgrade (or, ``down``, downgrade) ``store`` to an Alembic ``revision``."""
    from alembic import command

    def go(conn: Any) -> None:
        (command.downgrade if down else command.upgrade)(alembic_config(conn, store.schema),
                                                         revision)
    async with store.engine.begin() as conn:
        await conn.run_sync(go)


async def migrated_store(kind: str, tmp: str) -> AsyncIterator[Store]:
    async for store in bare_store(kind, tmp):
        await store.migrate()
        yield store


@contextlib.contextmanager
def statements_run(store: Store) -> Iterator[list[str]]:
    """Every SQL statement ``store`` sends while the block runs, as sent."""
    from sqlalchemy import event

    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    for engine in store.sync_engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in store.sync_engines:
            event.remove(engine, "before_cursor_execute", note)


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


@contextlib.contextmanager
def private_redis(port: int) -> Iterator[str]:
    """A Redis server of its own on 127.0.0.1:``port`` (nothing saved), for a test that counts
    the commands a gateway sends (``commands``): the shared one serves other tests too.
    Yields its URL; stopped afterwards."""
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                              text=True, check=False).stdout.strip() == "PONG":
                break
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited ({proc.returncode})")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"redis-server on port {port} did not answer in 5 s")
        yield url
    finally:
        stop(proc)


def commands(port: int) -> dict[str, int]:
    """Calls per command so far on the Redis at 127.0.0.1:``port`` (``INFO commandstats``)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    calls: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_"):].partition(":")
            calls[name] = int(stats.split(",")[0].removeprefix("calls="))
    return calls
