"""Alembic environment: always handed a live connection by gatehouse.store.db.Store.migrate."""

from __future__ import annotations

from alembic import context

from gatehouse.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `gatehouse migrate`, which supplies the connection")

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite",
                  version_table_schema=context.config.attributes.get("schema"))
with context.begin_transaction():
    context.run_migrations()
