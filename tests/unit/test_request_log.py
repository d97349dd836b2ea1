"""The request log: the bounded buffer and its counted drops, sampling that keeps every error,
and the store's rows (one conformance suite over SQLite and a real PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from gatehouse.errors import IdentityUnavailable
from gatehouse.store.db import (
    VALUES_PER_STATEMENT,
    WRITER_CACHE_KIB,
    Store,
    chunks_of,
    refused,
)
from gatehouse.store.requests import RequestRows, row_of
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.record import FIELDS, RequestRecord
from gatehouse.telemetry.requestlog import SAMPLE_EVERY, RequestLog
from tests.support.loops import counted_turns
from tests.support.services import (
    bare_store,
    migrate_to,
    migrated_store,
    statements_run,
)


def record(n: int = 0, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "at": time.time(), "request_id": f"req_{n:026d}", "client_request_id": None,
        "ray_id": None, "component": "api", "method": "POST", "path": "/v1/chat/completions",
        "endpoint": "chat.completions", "model": "demo", "stream": False, "status": 200,
        "outcome": "ok", "error_class": "ok", "error_type": None, "error_code": None,
        "error_cause": None, "org": "org_a", "project": "proj_a", "key_id": "key_a",
        "user_id": None, "tier": "standard", "client": "10.0.0.1", "edge": "pass",
        "quota": "allowed", "admission_wait_ms": 0.5, "attempts": ["a"], "backend": "a",
        "upstream_status": 200, "upstream_request_id": "up-1", "prompt_tokens": 5,
        "completion_tokens": 7, "total_tokens": 12, "usage_counted_by": "upstream",
        "latency_ms": 12.5, "ttfb_ms": 3.25}
    values.update(fields)
    return RequestRecord(**values)


class FakeRows:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[RequestRecord] = []

    async def add(self, records: Sequence[RequestRecord]) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.written.extend(records)

    async def find(self, any_id: str, **scope: Any) -> list[RequestRecord]:
        return []

    async def prune(self, before: float) -> int:
        return 0


def metric(m: Metrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, labels)
    return value or 0.0


def request_log(rows: FakeRows, m: Metrics, **kw: Any) -> RequestLog:
    now = [100.0]
    options: dict[str, Any] = {"size": 1000, "keep_days": 30, "sample_above": 10_000}
    options.update(kw)
    log = RequestLog(rows, m, clock=lambda: now[0], **options)  # type: ignore[arg-type]
    return log


async def test_a_full_buffer_drops_and_counts_never_blocks() -> None:
    m, rows = Metrics(), FakeRows()
    log = request_log(rows, m, size=100)
    for n in range(250):
        log.add(record(n))
    assert len(log.buffer) == 100 and log.dropped == 150
    await log.flush()
    assert len(rows.written) == 100
    assert metric(m, "gatehouse_request_log_dropped_total", reason="buffer_full") == 150
    assert metric(m, "gatehouse_request_log_written_total") == 100
    for n in range(10):  # room again after the flush
        log.add(record(1000 + n))
    await log.flush()
    assert len(rows.written) == 110
    assert metric(m, "gatehouse_request_log_dropped_total", reason="buffer_full") == 150


async def test_records_wait_for_a_store_that_is_down_and_refused_ones_are_counted(
        tmp_path: Path) -> None:
    m = Metrics()
    async for store in migrated_store("sqlite", str(tmp_path)):
        down = Store("postgresql+asyncpg://postgres@127.0.0.1:1/test")  # nothing listens
        log = RequestLog(RequestRows(down), m, size=50, keep_days=30, sample_above=10_000)
        try:
            for n in range(40):
                log.add(record(n))
            for _ in range(2):  # the store is down: nothing written, nothing lost
                await log.flush()
                assert len(log.buffer) == 40
            assert metric(m, "gatehouse_request_log_dropped_total", reason="store_error") == 0
            assert [r.request_id for r in await log.find(record(7).request_id)] == \
                [record(7).request_id]  # still found while it waits
            with pytest.raises(IdentityUnavailable):  # not here, and the store cannot say
                await log.find("req_" + "9" * 26)
            for n in range(40, 60):  # past the buffer: the newest are dropped, counted
                log.add(record(n))
            await log.flush()
            assert metric(m, "gatehouse_request_log_dropped_total", reason="buffer_full") == 10
        finally:
            await down.aclose()
        log.rows = RequestRows(store)  # the store is back
        await log.flush()
        assert not log.buffer and metric(m, "gatehouse_request_log_written_total") == 50
        assert len(await RequestRows(store).find(record(49).request_id)) == 1
        # rows the store refuses (the same request ids again: a primary key) are counted lost
        for n in range(5):
            log.add(record(n))
        await log.flush()
        assert metric(m, "gatehouse_request_log_dropped_total", reason="store_error") == 5
        assert not log.buffer


async def test_a_nul_in_a_path_or_model_neither_stalls_nor_loses_the_log(store: Store) -> None:
    """``GET /%00`` on PostgreSQL: its text cannot hold a NUL, asyncpg's refusal reached
    SQLAlchemy as a plain DBAPIError, taken for "cannot be reached" — the batch went back to
    the buffer, was refused again every second, and no record of anyone was written again.
    Now the NUL is stored as U+FFFD (on SQLite too), and the record is found by its id."""
    m = Metrics()
    log = RequestLog(RequestRows(store), m, size=100, keep_days=30, sample_above=10_000)
    odd = record(1, path="/\x00", model="a\x00b", client_request_id="job\x00")
    for r in (odd, record(2), record(3)):
        log.add(r)
    await log.flush()
    assert not log.buffer and metric(m, "gatehouse_request_log_written_total") == 3
    (found,) = await RequestRows(store).find(odd.request_id)
    assert (found.path, found.model) == ("/\ufffd", "a\ufffdb")
    assert await RequestRows(store).find("job\x00") == []  # no stored id holds a NUL


async def test_any_statement_stores_a_nul_as_u_fffd(store: Store) -> None:
    """Not only the batches: an ORM or Core statement's text (a chat message, a model's
    answer with a NUL in it) was refused whole by PostgreSQL, and the conversation's save
    failed."""
    async with store.engine.begin() as conn:
        got = (await conn.execute(text("SELECT :v"), {"v": "a\x00b"})).scalar_one()
        many = (await conn.exec_driver_sql("SELECT " + ("$1" if not store.is_sqlite else "?"),
                                           ("c\x00",))).scalar_one()
    assert (got, many) == ("a\ufffdb", "c\ufffd")


async def test_a_record_the_store_refuses_costs_only_itself(store: Store) -> None:
    """A batch the store refuses is written again a record at a time: only the refused
    record is lost (counted), not the others of its batch."""
    m = Metrics()
    rows = RequestRows(store)
    await rows.add([record(5)])
    log = RequestLog(rows, m, size=100, keep_days=30, sample_above=10_000)
    for n in range(1, 10):  # record 5 is in the store already: a primary key refuses it
        log.add(record(n))
    await log.flush()
    assert metric(m, "gatehouse_request_log_dropped_total", reason="store_error") == 1
    assert metric(m, "gatehouse_request_log_written_total") == 8
    for n in range(1, 10):
        assert len(await rows.find(record(n).request_id)) == 1
    assert not log.buffer


def test_refused_tells_a_refusal_from_a_store_out_of_reach() -> None:
    from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

    class PgError(Exception):
        def __init__(self, state: str) -> None:
            self.sqlstate = state

    assert refused(IntegrityError("x", None, Exception()))
    assert refused(DBAPIError("x", None, PgError("22021")))  # bad data: NUL in text
    assert refused(DBAPIError("x", None, PgError("42P01")))
    assert not refused(DBAPIError("x", None, PgError("08006")))  # connection failure
    assert not refused(DBAPIError("x", None, PgError("22021"), connection_invalidated=True))
    assert not refused(OperationalError("x", None, Exception()))
    assert not refused(ConnectionRefusedError()) and not refused(TimeoutError())


async def test_sampling_above_the_rate_keeps_every_error() -> None:
    m, rows = Metrics(), FakeRows()
    log = request_log(rows, m, sample_above=50)
    for n in range(50):  # under the rate: all kept
        log.add(record(n))
    for n in range(50, 1050):  # over it: successes 1 in SAMPLE_EVERY, errors all
        failed = n % 4 == 0
        log.add(record(n, status=503 if failed else 200,
                       error_class="unavailable" if failed else "ok"))
    errors = [r for r in log.buffer if r.status >= 400]
    assert len(errors) == 250
    kept_ok = len(log.buffer) - 250 - 50
    assert kept_ok == 750 // SAMPLE_EVERY
    assert log.sampled == 750 - kept_ok
    await log.flush()
    assert metric(m, "gatehouse_request_log_sampled_total") == log.sampled


async def test_records_being_written_can_still_be_found() -> None:
    m = Metrics()
    found_during: list[list[RequestRecord]] = []

    class SlowRows(FakeRows):
        async def add(self, records: Sequence[RequestRecord]) -> None:
            found_during.append(await log.find("req_" + "0" * 25 + "7"))
            await super().add(records)

    log = request_log(SlowRows(), m)
    for n in range(10):
        log.add(record(n))
    await log.flush()
    assert [r.request_id for r in found_during[0]] == ["req_" + "0" * 25 + "7"]


async def test_a_flush_writes_what_waits_when_it_starts_in_one_transaction(
        tmp_path: Path) -> None:
    """Records arriving while a batch is written wait for the next flush. A flush that chased
    them wrote a few rows per transaction, a hundred commits a second under load, and its
    writer thread cost ~200 µs of CPU per request (bench/telemetry.py: +43 % → +2 %)."""
    m = Metrics()
    async for store in migrated_store("sqlite", str(tmp_path)):
        commits: list[int] = []
        for engine in store.sync_engines:
            event.listen(engine, "commit", lambda *_: commits.append(1))
        log = RequestLog(RequestRows(store), m, size=10_000, keep_days=30, sample_above=10_000)
        for n in range(300):
            log.add(record(n))

        async def traffic() -> None:  # requests keep coming while the batch is written
            for n in range(1000, 3000):
                log.add(record(n))
                await asyncio.sleep(0)

        arriving = asyncio.create_task(traffic())
        await log.flush()
        assert len(commits) <= 2  # one transaction (and the hourly prune's, on a first flush)
        assert metric(m, "gatehouse_request_log_written_total") == 300
        waiting, first = len(log.buffer), len(commits)
        assert waiting > 0  # arrived during the write: the next flush's
        await arriving
        await log.flush()
        assert len(commits) - first == 1 and not log.buffer
        await log.flush()  # nothing waited: no transaction, no flush timed
        assert len(commits) - first == 1
        # each flush that wrote something is timed, for operators to see a writer falling
        # behind (gatehouse_request_log_flush_seconds)
        assert metric(m, "gatehouse_request_log_flush_seconds_count") == 2
        assert metric(m, "gatehouse_request_log_flush_seconds_sum") > 0
        assert metric(m, "gatehouse_request_log_written_total") == 2300
        assert len(await RequestRows(store).find(record(2999).request_id)) == 1


def test_rows_are_in_column_order() -> None:
    r = record(3, client="192.0.2.1", attempts=["a:503", "b"])
    row = row_of(r)
    assert len(row) == len(FIELDS)
    for name, value in zip(FIELDS, row, strict=True):
        expected = getattr(r, name)
        assert value == (str(expected) if name == "client" else
                         '["a:503","b"]' if name == "attempts" else expected), name


# -- the store's rows, on SQLite and PostgreSQL ----------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for s in migrated_store(request.param, str(tmp_path)):
        yield s


async def test_rows_round_trip_and_lookup_by_any_id(store: Store) -> None:
    rows = RequestRows(store)
    t = time.time()
    ok = record(1, at=t - 5, client_request_id="retry-me", client=None)
    retried = record(2, at=t - 1, client_request_id="retry-me")
    denied = record(3, at=t, ray_id="0123456789abcdef", status=403, error_class="blocked",
                    error_type="access_denied", error_code="1020", org=None, project=None,
                    key_id=None, attempts=[], backend=None, edge="deny",
                    error_cause="ray 0123456789abcdef: rule testnet", stream=True)
    other = record(4, org="org_b", client_request_id="retry-me")
    await rows.add([ok, retried, denied, other])
    assert await rows.find(ok.request_id) == [ok]
    assert await rows.find("0123456789abcdef") == [denied]
    by_client = await rows.find("retry-me", org="org_a")
    assert [r.request_id for r in by_client] == [retried.request_id, ok.request_id]
    assert [r.request_id for r in await rows.find(other.request_id, org="org_a")] == []
    assert await rows.find(other.request_id, org="org_b") == [other]
    assert await rows.find("nothing") == []


async def test_rows_cut_long_text_and_are_pruned_by_age(store: Store) -> None:
    rows = RequestRows(store)
    old = record(1, at=time.time() - 40 * 86400)
    long = record(2, path="/v1/" + "p" * 2000, error_cause="c" * 5000,
                  client_request_id="x" * 512, attempts=["a:ConnectFailed", "b:503", "c"])
    await rows.add([old, long])
    (found,) = await rows.find("x" * 512)
    assert found == replace(long, path=long.path[:512], error_cause="c" * 1024)
    assert await rows.prune(time.time() - 30 * 86400) == 1
    assert await rows.find(old.request_id) == []
    assert await rows.find(long.request_id) != []


async def test_a_big_batch_is_written_a_bounded_statement_at_a_time(store: Store) -> None:
    """A flush binds at most 2,048 values per statement on SQLite (4,096 per executemany on
    PostgreSQL, in equal slices: each is a round trip) and makes the rows of one statement at
    a time, with the event loop free in between: SQLite's writer thread holds the GIL while
    it binds a statement, asyncpg encodes a batch in the loop, and 500 records in statements
    of 8,192 values held every request of the worker ~2.3 ms once a second — the p99 at 500
    req/s (bench/flush_stall.py). Still one transaction, every row written."""
    statements: list[int] = []  # values each statement carried
    begun: list[int] = []
    inserts: list[int] = []  # the transaction each statement was in
    threads: set[str] = set()  # where the statements were sent from

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        if statement.startswith("INSERT INTO request_log"):
            statements.append(sum(map(len, parameters)) if executemany else len(parameters))
            inserts.append(len(begun))
            threads.add(threading.current_thread().name)

    for engine in store.sync_engines:
        event.listen(engine, "begin", lambda *_: begun.append(1))
        event.listen(engine, "before_cursor_execute", seen)
    made: list[int] = []  # rows made before each statement was sent

    def row(r: RequestRecord) -> tuple[Any, ...]:
        made.append(len(statements))
        return row_of(r)

    records = [record(n) for n in range(500)]
    async with counted_turns() as turns:  # the loop's turns while the batch is written
        await store.insert_many("request_log", FIELDS, records, row)
    bound = VALUES_PER_STATEMENT["sqlite" if store.is_sqlite else "postgresql"]
    most = bound // len(FIELDS)
    assert sum(statements) == 500 * len(FIELDS)
    # SQLite ~0.3 ms of the loop per 1,000 values; asyncpg less (and a round trip each)
    assert max(statements) <= bound <= (2048 if store.is_sqlite else 4096)
    assert len(statements) >= 500 // most
    if not store.is_sqlite:  # equal slices: no more round trips than needed
        assert len(statements) == -(-500 // most)
    assert len(set(inserts)) == 1  # one transaction
    # each statement's rows were made just before it, not all 500 first
    assert max(made.count(i) for i in set(made)) <= most
    assert turns.count >= len(statements)  # the loop ran between the statements
    # SQLite: the whole batch in the store's writer thread, one hand-off from the loop
    assert threads == ({"gatehouse-store-writer_0"} if store.is_sqlite
                       else {threading.current_thread().name})
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM request_log"))).scalar() == 500


async def test_a_sqlite_batch_is_written_whole_even_when_its_flush_is_cancelled(
        tmp_path: Path) -> None:
    """A SQLite file's batches are written by the store's writer thread, handed over whole: a
    flush cancelled meanwhile (a worker stopping) does not cut its batch short, and closing
    the store waits for it — every record written, in one transaction."""
    async for store in migrated_store("sqlite", str(tmp_path)):
        writing = asyncio.create_task(RequestRows(store).add([record(n) for n in range(3000)]))
        await asyncio.sleep(0)  # handed to the writer thread
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        await store.aclose()
        await store.aclose()  # twice is harmless
        again = Store(str(store.url))
        try:
            async with again.engine.connect() as conn:
                written = await conn.execute(text("SELECT count(*) FROM request_log"))
                assert written.scalar() == 3000
        finally:
            await again.aclose()


async def test_the_sqlite_batch_writer_connection_is_set_up_as_every_other(
        tmp_path: Path) -> None:
    """The writer thread's connection waits for the write lock as the others do (WAL, busy
    timeout, foreign keys), with a small page cache of its own (db.WRITER_CACHE_KIB)."""
    async for store in migrated_store("sqlite", str(tmp_path)):
        await RequestRows(store).add([record(1)])
        writer = store.writer
        assert writer is not None
        got = await asyncio.get_running_loop().run_in_executor(writer.thread, pragmas,
                                                               writer.engine)
        assert got == ["wal", 30000, 1, -WRITER_CACHE_KIB]


def pragmas(engine: Any) -> list[Any]:
    with engine.connect() as conn:
        return [conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "cache_size")]


async def test_a_sqlite_file_that_is_no_database_keeps_the_records_for_later(
        tmp_path: Path) -> None:
    """The writer thread's failure comes back to the flush as a store that cannot be used (not
    a refusal of the rows, and not a hang): the batch waits in the buffer, nothing is counted
    lost, and it is written once a usable store is there."""
    m = Metrics()
    junk = tmp_path / "junk" / "store.db"
    junk.parent.mkdir()
    junk.write_bytes(b"this is not a database " * 400)
    broken = Store(f"sqlite+aiosqlite:///{junk}")
    log = RequestLog(RequestRows(broken), m, size=100, keep_days=30, sample_above=10_000)
    try:
        for n in range(30):
            log.add(record(n))
        for _ in range(2):
            await log.flush()
            assert len(log.buffer) == 30
        assert metric(m, "gatehouse_request_log_dropped_total", reason="store_error") == 0
        assert metric(m, "gatehouse_request_log_written_total") == 0
    finally:
        await broken.aclose()
    async for store in migrated_store("sqlite", str(tmp_path)):
        log.rows = RequestRows(store)
        await log.flush()
        assert not log.buffer and metric(m, "gatehouse_request_log_written_total") == 30


async def test_a_sqlite_store_locked_by_another_writer_holds_no_request(
        tmp_path: Path) -> None:
    """Another process holding SQLite's write lock makes the writer thread wait for it (the
    busy timeout), not the worker: the event loop keeps running meanwhile, and the batch is
    written, whole and once, when the lock goes."""
    async for store in migrated_store("sqlite", str(tmp_path)):
        other = sqlite3.connect(str(store.url.database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            async with counted_turns() as turns:
                writing = asyncio.create_task(
                    RequestRows(store).add([record(n) for n in range(500)]))
                await asyncio.sleep(0.3)
                assert not writing.done()  # waiting for the lock…
                assert turns.count > 100  # …while the loop serves everyone else
        finally:
            other.rollback()
            other.close()
        await writing
        async with store.engine.connect() as conn:
            written = await conn.execute(text("SELECT count(*) FROM request_log"))
            assert written.scalar() == 500


async def test_batches_of_any_length_make_few_distinct_statements(tmp_path: Path) -> None:
    """The SQLite driver keeps every distinct statement it prepares (128 per connection): one
    statement size per batch length filled that cache with statements of thousands of
    placeholders, and a gateway's memory grew with its traffic (~2 MB per 30,000 requests,
    without end). Batches of 1..300 rows now take at most a handful of statement shapes, and
    every row is written."""
    async for store in migrated_store("sqlite", str(tmp_path)):
        await _few_statements(store)


async def _few_statements(store: Store) -> None:
    rows = RequestRows(store)
    n = 0
    with statements_run(store) as sent:
        for length in range(1, 301, 7):
            await rows.add([record(n + i) for i in range(length)])
            n += length
    statements = {s for s in sent if s.startswith("INSERT INTO request_log")}
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM request_log"))).scalar()
    assert stored == n
    assert len(statements) <= 10, sorted(s.count("(") for s in statements)


def test_chunks_cover_every_row_once_in_few_sizes() -> None:
    for total in range(0, 1000, 13):
        pieces = chunks_of(total, 227)
        assert [start for start, _ in pieces] == \
            [sum(count for _, count in pieces[:i]) for i in range(len(pieces))]
        assert sum(count for _, count in pieces) == total
        assert {count for _, count in pieces} <= {227, 128, 64, 32, 16, 8, 4, 2, 1}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_id_indexes_hold_only_rows_with_an_id(kind: str, tmp_path: Path) -> None:
    """Most requests carry no client request id and no Ray ID, and every row still cost an
    entry in both indexes (~27 → ~19 µs of the store's CPU a record, bench/flush_stall.py's
    kind). A store at 0009 with rows upgrades to partial indexes; lookups by either id still
    use them (and find the same rows), rows without an id are not in them; it goes back down."""
    async def plan(db: Store, column: str) -> str:
        async with db.engine.connect() as conn:
            if db.is_sqlite:
                rows = await conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN SELECT * FROM request_log WHERE {column} = ?", ("x",))
                return " ".join(str(r[-1]) for r in rows)
            await conn.exec_driver_sql("SET enable_seqscan = off")  # an empty-ish table
            rows = await conn.exec_driver_sql(
                f"EXPLAIN SELECT * FROM request_log WHERE {column} = $1", ("x",))
            return " ".join(str(r[0]) for r in rows)

    async def definition(db: Store, index: str) -> str:
        async with db.engine.connect() as conn:
            if db.is_sqlite:
                found = await conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (index,))
            else:
                found = await conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = $1 "
                    "AND schemaname = current_schema()", (index,))
            return str(found.scalar())

    async for db in bare_store(kind, str(tmp_path)):
        await migrate_to(db, "0009_usage_counted_by")
        rows = RequestRows(db)
        with_ids = record(1, client_request_id="mine-1", ray_id="0123456789abcdef")
        plain = [record(n) for n in range(2, 50)]
        await rows.add([with_ids, *plain])
        await migrate_to(db, "head")
        for column in ("client_request_id", "ray_id"):
            assert f"ix_request_log_{column}" in await plan(db, column)
        assert await rows.find("mine-1") == [with_ids]
        assert await rows.find("0123456789abcdef", org="org_a") == [with_ids]
        assert await rows.find(plain[0].request_id) == [plain[0]]
        later = record(99, client_request_id="mine-2")
        await rows.add([later, record(100)])
        assert await rows.find("mine-2") == [later]
        for column in ("client_request_id", "ray_id"):  # rows without one are not in it
            said = await definition(db, f"ix_request_log_{column}")
            assert f"WHERE {column} IS NOT NULL" in said.replace("(", "").replace(")", "")
        await migrate_to(db, "0009_usage_counted_by", down=True)
        assert "WHERE" not in await definition(db, "ix_request_log_ray_id")
        assert await rows.find("mine-2") == [later]


def _prebuild_statements() -> list[str]:
    """docs/deployment.md's statements that build 0010's indexes beforehand, one by one."""
    doc = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()
    section = doc.split("### Upgrading a big PostgreSQL request log", 1)[1]
    block = section.split("```sql\n", 1)[1].split("```", 1)[0]
    return [s.strip() for s in block.split(";") if s.strip()]


def _index_statements(sent: list[str]) -> list[str]:
    """The CREATE / DROP INDEX statements among ``sent`` (a migration's rebuilds)."""
    return [" ".join(s.split()) for s in sent if s.split()[:1] in (["CREATE"], ["DROP"])
            and "INDEX" in s.upper()]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_id_indexes_built_beforehand_are_kept_by_the_migration(kind: str,
                                                                      tmp_path: Path) -> None:
    """On a big PostgreSQL request log, migration 0010's rebuild holds the table while it runs;
    docs/deployment.md has the operator build the indexes beforehand (CONCURRENTLY, the table
    writable meanwhile). The migration then finds them built and leaves them — the same
    indexes, not rebuilt — and the store is at the newest revision, lookups by id working."""
    async for db in bare_store(kind, str(tmp_path)):
        await migrate_to(db, "0009_usage_counted_by")
        rows = RequestRows(db)
        mine = record(1, client_request_id="mine-1", ray_id="0123456789abcdef")
        await rows.add([mine, record(2)])
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            for statement in _prebuild_statements():
                if db.is_sqlite:  # no CONCURRENTLY, no renaming an index: in place
                    if not statement.startswith("CREATE"):
                        continue
                    statement = statement.replace(" CONCURRENTLY", "").replace("_partial", "")
                    await conn.exec_driver_sql("DROP INDEX " + statement.split()[2])
                await conn.exec_driver_sql(statement)
        with statements_run(db) as sent:
            await migrate_to(db, "head")
        assert _index_statements(sent) == []
        assert await db.at_head()
        assert await rows.find("mine-1") == [mine]
        assert await rows.find("0123456789abcdef") == [mine]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_an_id_index_of_another_shape_is_rebuilt(kind: str, tmp_path: Path) -> None:
    """The migration reads an index's definition, not its name alone: one under the name with
    another condition (or, on PostgreSQL, an invalid one a failed CONCURRENTLY left) is
    rebuilt as the migration would have."""
    async for db in bare_store(kind, str(tmp_path)):
        await migrate_to(db, "0009_usage_counted_by")
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("DROP INDEX ix_request_log_ray_id")
            await conn.exec_driver_sql(
                "CREATE INDEX ix_request_log_ray_id ON request_log (ray_id, org, at) "
                "WHERE org IS NOT NULL")
            if not db.is_sqlite:  # the right shape, but marked invalid
                await conn.exec_driver_sql("DROP INDEX ix_request_log_client_request_id")
                await conn.exec_driver_sql(
                    "CREATE INDEX ix_request_log_client_request_id ON request_log "
                    "(client_request_id, org, at) WHERE client_request_id IS NOT NULL")
                await conn.exec_driver_sql(
                    "UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                    "'ix_request_log_client_request_id'::regclass")
        with statements_run(db) as sent:
            await migrate_to(db, "head")
        dropped = {s.split()[2] for s in _index_statements(sent) if s.startswith("DROP INDEX")}
        # (on SQLite the client request id's is 0009's, not partial: rebuilt as ever)
        assert dropped == {"ix_request_log_ray_id", "ix_request_log_client_request_id"}
        async with db.engine.connect() as conn:
            if db.is_sqlite:
                said = (await conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'ix_request_log_ray_id'")).scalar()
            else:
                said = (await conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_request_log_ray_id' "
                    "AND schemaname = current_schema()")).scalar()
        assert "ray_id IS NOT NULL" in str(said).replace("(", "").replace(")", "")
