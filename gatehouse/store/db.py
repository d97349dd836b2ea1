"""The store's engine: connect (SQLite or PostgreSQL), migrate safely, count queries."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger("gatehouse.store")

# any 64-bit number, the same in every replica: the lock that serialises migrations
_MIGRATION_LOCK = 0x6761746568


class StoreError(Exception):
    """The store could not be reached or refused an operation (the cause is logged only)."""


class Store:
    """An async engine plus a session factory; ``queries`` counts statements sent (for tests
    and the ``gatehouse_store_queries_total`` metric)."""

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        self.url = make_url(url)
        self.schema = schema
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        elif schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.queries = 0
        self.on_query: Callable[[], None] | None = None
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._count)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def _count(self, *args: Any) -> None:
        self.queries += 1
        if self.on_query is not None:
            self.on_query()

    def session(self) -> AsyncSession:
        return self.sessions()

    async def insert_many(self, table: str, columns: Sequence[str],
                          rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows (each in ``columns`` order) with the driver's own executemany: for
        batches of thousands of rows a second (Ray events, the request log), SQLAlchemy's
        per-row parameter handling would cost more than the inserts."""
        # aiosqlite takes ?, asyncpg $1 … (the store's two drivers)
        dollar = self.engine.dialect.paramstyle == "numeric_dollar"
        marks = [f"${i}" if dollar else "?" for i in range(1, len(columns) + 1)]
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})"
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(sql, list(rows))

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # any driver error means "not reachable"
            log.warning("store ping failed: %s", type(exc).__name__)
            return False

    async def migrate(self) -> None:
        """Bring the schema to the newest revision; safe when several replicas start at once
        (PostgreSQL: an advisory lock; SQLite: a lock file beside the database)."""
        async with self._file_lock(), self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                   {"k": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade, self.schema)

    @contextlib.asynccontextmanager
    async def _file_lock(self) -> AsyncIterator[None]:
        database = self.url.database or ""
        if not self.is_sqlite or not database or database == ":memory:":
            yield
            return
        with open(database + ".migrate-lock", "a+b") as handle:
            # waited for in a thread: the holder may be in this very process and event loop
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets several worker processes read while one writes
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(connection: Connection | None = None, schema: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    cfg.attributes["schema"] = schema
    return cfg


def _upgrade(connection: Connection, schema: str | None) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection, schema), "head")


def run(coro: Any) -> Any:
    """Run a store coroutine from synchronous code (the CLI)."""
    return asyncio.run(coro)
