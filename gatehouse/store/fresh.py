"""A new store's schema in one step: the tables as gatehouse/store/tables.py declares them,
stamped with the newest migration's revision, instead of Alembic running every migration
from the first. That cost each new store ~0.3 s of CPU and loaded Alembic and Mako (on a
2-core VM: 320 ms, now 125): every first ``gatehouse serve`` on a machine, every gateway a
test starts. A store that holds any
of the gateway's tables already is migrated by Alembic, as before.

The declared tables and the migrations must make the same schema: tests/unit/test_store_fresh.py
builds a store each way, on SQLite and on PostgreSQL, and compares their catalogues (columns
with their types, nullability and defaults, keys, constraints, indexes with their WHERE)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from gatehouse.store.tables import PARTIAL_INDEXES, SEED_ROWS, Base

VERSION_TABLE = "alembic_version"


def is_empty(connection: Connection, schema: str | None) -> bool:
    """Whether the store holds none of the gateway's tables (nor Alembic's)."""
    found = set(inspect(connection).get_table_names(schema=schema))
    return not found & (set(Base.metadata.tables) | {VERSION_TABLE})


def create(connection: Connection, schema: str | None, revision: str) -> None:
    """Every table and index, the rows a store starts with, then Alembic's version table
    holding ``revision``, in the caller's transaction: a failure half way (a process killed
    on its first start) leaves the store empty, and the next start makes it whole. SQLite's
    Python driver runs DDL outside any transaction unless one was begun, so here one is."""
    driver: Any = connection.connection.driver_connection
    if connection.dialect.name == "sqlite" and not driver.in_transaction:
        connection.exec_driver_sql("BEGIN")
    for table in Base.metadata.sorted_tables:
        connection.execute(CreateTable(table))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            ddl = str(CreateIndex(index).compile(dialect=connection.dialect))
            column = PARTIAL_INDEXES.get(str(index.name))
            if column is not None:
                ddl += f" WHERE {column} IS NOT NULL"
            connection.exec_driver_sql(ddl)
    for name, rows in SEED_ROWS.items():
        connection.execute(Base.metadata.tables[name].insert(), rows)
    # as Alembic makes it (alembic.runtime.migration), in the schema it is told to use
    version = Table(VERSION_TABLE, MetaData(),
                    Column("version_num", String(32), nullable=False),
                    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
                    schema=schema)
    connection.execute(CreateTable(version))
    connection.execute(version.insert().values(version_num=revision))
