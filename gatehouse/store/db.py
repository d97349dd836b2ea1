"""The store's engine: connect (SQLite or PostgreSQL), migrate safely, count queries."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgreSQLInsert
    from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert

log = logging.getLogger("gatehouse.store")
T = TypeVar("T")

# any 64-bit number, the same in every replica: the lock that serialises migrations
_MIGRATION_LOCK = 0x6761746568
# values per statement in insert_many (per executemany on PostgreSQL), by store. SQLite's driver
# holds the GIL while it binds a statement (in the store's writer thread), and asyncpg encodes
# a batch in the event loop: either way the worker's requests wait. A statement of 8,192
# values (234 request-log rows) held the loop ~2.3 ms (PostgreSQL: one executemany of a
# flush's 500 rows, ~1.7 ms), once a second at 500 req/s (bench/flush_stall.py): ~1 % of
# requests waited for it. Smaller pieces cost more statements, each waiting for the GIL (SQLite:
# the write lock is held that much longer, other workers' writes wait) or a round trip
# (PostgreSQL). SQLite 2,048: ~0.6 ms a statement; PostgreSQL 4,096 in equal slices: ~1.1 ms,
# 5 round trips for 500 rows.
VALUES_PER_STATEMENT = {"sqlite": 2048, "postgresql": 4096}
SQLITE_CONNECT = {"timeout": 30}  # seconds a connection waits for another's write lock
WRITER_CACHE_KIB = 256  # SQLite's page cache of the batch writer's connection (_small_cache)


def chunks_of(total: int, most: int) -> list[tuple[int, int]]:
    """(start, count) pieces of ``total`` rows: ``most`` at a time, then the rest in
    decreasing powers of two — so every piece has one of a few sizes."""
    pieces = []
    start = 0
    while total - start >= most:
        pieces.append((start, most))
        start += most
    size = 1 << max(0, (most - 1).bit_length() - 1)
    while start < total:
        while size > total - start:
            size >>= 1
        pieces.append((start, size))
        start += size
    return pieces


def sqlite_statements(head: str, width: int, items: Sequence[T],
                      row: Callable[[T], Sequence[Any]] | None,
                      most: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """SQLite's statements for ``items``: many rows each. The driver's executemany steps
    each row on its own, letting go of the GIL and taking it back every row, so its thread
    and the event loop's traded the GIL hundreds of times a second under load; one statement
    of many rows trades it once. Statements come in a few sizes only — ``most`` rows, then
    the rest in powers of two: the driver keeps each distinct statement it prepares (128 per
    connection), and with one size per batch length that cache filled with statements of
    hundreds of placeholders each, tens of MB that grew with the traffic. Each statement's
    rows are made just before it."""
    one = "(" + ", ".join("?" * width) + ")"
    for start, count in chunks_of(len(items), most):
        piece = items[start:start + count]
        rows: Sequence[Sequence[Any]] = piece if row is None else \
            [row(item) for item in piece]  # type: ignore[assignment]
        yield head + ", ".join([one] * count), tuple(v for r in rows for v in r)


class StoreError(Exception):
    """The store could not be reached or refused an operation (the cause is logged only)."""


class Store:
    """An async engine plus a session factory; ``queries`` counts statements sent (for tests
    and the ``gatehouse_store_queries_total`` metric)."""

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        self.url = make_url(url)
        self.schema = schema
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        in_file = False  # a SQLite file (not a database in memory)
        if self.is_sqlite:
            database = self.url.database or ""
            in_file = database not in ("", ":memory:")
            if in_file:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = dict(SQLITE_CONNECT)
        elif schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.queries = 0
        self.on_query: Callable[[], None] | None = None
        _watch(self.engine.sync_engine, self._count, sqlite=self.is_sqlite)
        # a SQLite file's batched inserts are written by a thread of their own (a database
        # in memory is one per connection: there they go through the engine)
        self.writer = _BatchWriter(self.url, self._count) if in_file else None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sync_engines(self) -> list[Engine]:
        """Every engine this store sends statements through (for event listeners)."""
        return [self.engine.sync_engine] + ([self.writer.engine] if self.writer else [])

    def _count(self, *args: Any) -> None:
        self.queries += 1
        if self.on_query is not None:
            self.on_query()

    def session(self) -> AsyncSession:
        return self.sessions()

    def insert(self, table: Any) -> SQLiteInsert | PostgreSQLInsert:
        """An INSERT of this store's dialect (for its ON CONFLICT). The dialect is imported
        here, not at the top: importing PostgreSQL's loads the modules of its four drivers,
        ~2 MB of RSS that every worker on SQLite kept."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table)
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)

    async def insert_many(self, table: str, columns: Sequence[str], items: Sequence[T],
                          row: Callable[[T], Sequence[Any]] | None = None) -> None:
        """Insert ``items`` in one transaction, each a row in ``columns`` order (or made one by
        ``row``), with the driver's own batching: for thousands of rows a second (Ray events,
        the request log), SQLAlchemy's per-row parameter handling would cost more than the
        inserts. A statement's worth of rows (``VALUES_PER_STATEMENT``) is made and written at
        a time, so the event loop runs between them (never held for a whole batch). A SQLite
        file's batches are written by :class:`_BatchWriter`'s thread."""
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        most = max(1, VALUES_PER_STATEMENT[self.url.get_backend_name()] // len(columns))
        if self.writer is not None:
            await self.writer.insert_many(head, len(columns), items, row, most)
            return
        async with self.engine.begin() as conn:
            if self.is_sqlite:  # a database in memory
                for statement, values in sqlite_statements(head, len(columns), items, row,
                                                           most):
                    await conn.exec_driver_sql(statement, values)
                return
            # asyncpg ($1 …) pipelines an executemany in one round trip: equal slices
            marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
            for start in range(0, len(items), most):
                piece = items[start:start + most]
                rows = piece if row is None else [row(item) for item in piece]
                await conn.exec_driver_sql(f"{head}({marks})", list(rows))

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # any driver error means "not reachable"
            log.warning("store ping failed: %s", type(exc).__name__)
            return False

    async def migrate(self) -> bool:
        """Bring the schema to the newest revision; safe when several replicas start at once
        (PostgreSQL: an advisory lock; SQLite: a lock file beside the database). A store at
        the newest revision already is left alone without loading Alembic (and Mako): ~12 MB
        and a few hundred ms that every worker start paid. True when the store was behind
        (another replica may have done the work while this one waited for the lock)."""
        if await self.at_head():
            return False
        async with self._file_lock(), self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                   {"k": _MIGRATION_LOCK})
            if await self.at_head():  # another replica did it while this one waited
                return False
            await conn.run_sync(_upgrade, self.schema)
        return True

    async def at_head(self) -> bool:
        """True when the store's revision is the newest migration's (one head only)."""
        head = head_revision()
        if head is None:
            return False
        table = "alembic_version" if not self.schema else f'"{self.schema}".alembic_version'
        try:
            async with self.engine.connect() as conn:
                found = (await conn.execute(text(f"SELECT version_num FROM {table}"))).all()
        except Exception:  # noqa: BLE001  # no table yet, or any other reason: migrate
            return False
        return [row[0] for row in found] == [head]

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
        if self.writer is not None:
            await self.writer.aclose()
        await self.engine.dispose()


class _BatchWriter:
    """SQLite's batched inserts (request log, Ray events, rollups), written by a thread of
    their own over a connection of their own: one hand-off from the event loop per batch.

    Through the async engine every statement of a batch was three round trips between the
    loop and aiosqlite's thread (cursor, execute, close), each waiting for the GIL and for a
    turn of a loop that, under saturation, always has work: a flush of ~2,500 records took
    1.6-4 s, records piled up to ~5,000 meanwhile, and the allocators kept that high-water
    (+12 MB of a worker's RSS after load). Here a flush of ~1,200 records takes ~100 ms under
    the same load. The statements stay ``VALUES_PER_STATEMENT`` values each, their rows made
    just before them: this thread holds the GIL while it binds one, and requests wait for
    it."""

    def __init__(self, url: Any, on_statement: Callable[..., None]) -> None:
        self.engine: Engine = create_engine(url.set(drivername="sqlite"), pool_size=1,
                                            max_overflow=0, connect_args=dict(SQLITE_CONNECT))
        _watch(self.engine, on_statement, sqlite=True)
        event.listen(self.engine, "connect", _small_cache)
        # one thread: its connection was made in it, and SQLite writes one at a time anyway
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="gatehouse-store-writer")
        self.closed = False
        self.used = False  # a connection was made, in the thread (a CLI command makes none)

    async def insert_many(self, head: str, width: int, items: Sequence[T],
                          row: Callable[[T], Sequence[Any]] | None, most: int) -> None:
        """Written whole even when the awaiting task is cancelled (a worker stopping):
        :meth:`aclose` waits for it."""
        self.used = True
        await asyncio.get_running_loop().run_in_executor(
            self.thread, self._insert, head, width, items, row, most)

    def _insert(self, head: str, width: int, items: Sequence[T],
                row: Callable[[T], Sequence[Any]] | None, most: int) -> None:
        with self.engine.begin() as conn:
            for statement, values in sqlite_statements(head, width, items, row, most):
                conn.exec_driver_sql(statement, values)

    async def aclose(self) -> None:
        """After the batches handed over (a cancelled flush's included) are written."""
        if self.closed:
            return
        self.closed = True
        if not self.used:
            self.engine.dispose()
            return
        # closed in its own thread: SQLite's connection refuses to be used from another
        await asyncio.get_running_loop().run_in_executor(self.thread, self.engine.dispose)
        await asyncio.to_thread(self.thread.shutdown)


def _watch(engine: Engine, on_statement: Callable[..., None], *, sqlite: bool) -> None:
    """What every engine of a store listens for: each statement counted, every NUL in its
    text made U+FFFD, and on SQLite each new connection's pragmas."""
    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "before_cursor_execute", _without_nul, retval=True)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets several worker processes read while one writes
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _small_cache(dbapi_conn: Any, _record: Any) -> None:
    """The batch writer's page cache: 256 KiB, not SQLite's 2 MB. It appends rows under random
    keys (request ids), so a bigger cache kept little it would use again: flushes of 1,200
    records into a request log of 500,000 took the same ~50 ms either way, and the 2 MB cost a
    worker ~1.9 MB of RSS after load (bench/memory.py)."""
    dbapi_conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")


_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:[\"']([^\"']+)[\"']|None)",
                       re.MULTILINE)


# what a store that cannot be reached or used raises (PostgreSQL down, a wrong password, a
# SQLite file that is not a database); see unusable()
STORE_ERRORS = (OSError, SQLAlchemyError)


def _without_nul(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> tuple[str, Any]:
    """Every text a statement carries, as both stores can hold it: PostgreSQL's text cannot
    hold a NUL (a path of ``/%00``, a model's name, a chat message, an answer), and refused
    the whole statement — a request log's batch of everyone's records, a conversation's save.
    A NUL is written (and looked up) as U+FFFD, on SQLite too, so both stores agree."""
    if executemany:
        return statement, [_cleaned(p) for p in parameters] \
            if any(_has_nul(p) for p in parameters) else parameters
    return statement, _cleaned(parameters) if _has_nul(parameters) else parameters


def _has_nul(parameters: Any) -> bool:
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    return any(type(v) is str and "\x00" in v for v in values)


def _cleaned(parameters: Any) -> Any:
    def clean(v: Any) -> Any:
        return v.replace("\x00", "\ufffd") if type(v) is str else v
    if isinstance(parameters, dict):
        return {k: clean(v) for k, v in parameters.items()}
    return type(parameters)(map(clean, parameters)) if isinstance(parameters, tuple | list) \
        else parameters


# SQLSTATE classes of a statement the store received and refused: data (22), integrity (23),
# syntax or access (42) — as opposed to a store that could not be reached (08, an OSError)
_REFUSING_CLASSES = ("22", "23", "42")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver's error: asyncpg's errors reach SQLAlchemy as a plain
    DBAPIError, so the exception's class alone does not tell what the store said."""
    state = getattr(getattr(exc, "orig", None), "sqlstate", None) \
        or getattr(getattr(exc, "orig", None), "pgcode", None)
    return state if isinstance(state, str) else None


def refused(exc: BaseException) -> bool:
    """True when the store answered and said no to the rows or the statement (a constraint,
    bad data): writing the same again cannot help. False when it could not be reached."""
    if isinstance(exc, IntegrityError | DataError | ProgrammingError):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    state = _sqlstate(exc)
    return state is not None and state[:2] in _REFUSING_CLASSES


def refused_value(exc: BaseException) -> bool:
    """Whether a store error is about a value the statement carried (SQLSTATE class 22, "data
    exception": a NUL in text, a number out of range) rather than about reaching the store:
    the request's fault, not the service's."""
    if isinstance(exc, DataError):
        return True
    state = _sqlstate(exc)
    return state is not None and state.startswith("22")


def unusable(url: str, exc: BaseException) -> str | None:
    """One line for a store that could not be reached or used (a CLI command, ``serve``'s
    start): its URL with the password hidden and the driver's reason, not a traceback. None
    for a file's error (the secret, a socket path): not the store's, and it names the file."""
    from gatehouse.config import hidden_password

    if isinstance(exc, OSError) and exc.filename is not None:
        return None
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else ""
    return f"cannot use the store at {hidden_password(url)}: {type(exc).__name__}: {reason}"


def head_revision() -> str | None:
    """The newest migration's revision, read from the files (not through Alembic); None when
    there is not exactly one head."""
    revisions, parents = set(), set()
    for path in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        found = {m.group(1): m.group(2) for m in _REVISION.finditer(path.read_text())}
        if found.get("revision"):
            revisions.add(found["revision"])
            if found.get("down_revision"):
                parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def alembic_config(connection: Connection | None = None, schema: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    cfg.attributes["schema"] = schema
    return cfg


def _upgrade(connection: Connection, schema: str | None) -> None:
    """An empty store gets the newest schema at once (gatehouse/store/fresh.py); any other
    is taken to it by Alembic, one migration at a time."""
    from gatehouse.store import fresh

    head = head_revision()
    if head is not None and fresh.is_empty(connection, schema):
        fresh.create(connection, schema, head)
        return
    from alembic import command

    command.upgrade(alembic_config(connection, schema), "head")


def run(coro: Any) -> Any:
    """Run a store coroutine from synchronous code (the CLI)."""
    return asyncio.run(coro)
