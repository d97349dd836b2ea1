"""request_log: the client request id and Ray ID indexes hold only the rows that have one

Most requests carry neither (a Ray ID is an edge answer's; a client request id is sent by a
few clients), and every row still cost an entry in both indexes: ~27 → ~19 µs of the store's
CPU a written record on SQLite (bench/flush_stall.py), and their size on disk. A lookup by
either id (``column = value``) implies the column is not null, so both stores' planners use the
partial index as before.

On PostgreSQL the rebuild holds the table (writes and lookups wait) while each index is built:
about 0.2 s per million rows when the table is in memory, a read of the whole table when not.
An operator of a big request log builds the partial indexes beforehand without holding it
(``CREATE INDEX CONCURRENTLY``, docs/deployment.md); an index found partial already is left
as it is, so the migration then only records its revision.

Revision ID: 0010_request_log_partial_ids
Revises: 0009_usage_counted_by
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0010_request_log_partial_ids"
down_revision = "0009_usage_counted_by"
branch_labels = None
depends_on = None

IDS = {"ix_request_log_client_request_id": "client_request_id",
       "ix_request_log_ray_id": "ray_id"}


# an index's definition, if it is valid (a CREATE INDEX CONCURRENTLY that failed leaves an
# invalid one, which no query uses)
_VALID_PG_INDEX = ("SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                   "JOIN pg_class c ON c.oid = i.indexrelid "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE c.relname = :n AND n.nspname = current_schema() AND i.indisvalid")


def _built(name: str, column: str) -> bool:
    """Whether the index ``name`` is this migration's already: on (column, org, at), holding
    only the rows where ``column`` is not null (its definition read back, spaces, quotes and
    parentheses aside), and valid."""
    bind = op.get_bind()
    query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n" \
        if bind.dialect.name == "sqlite" else _VALID_PG_INDEX
    found = bind.execute(sa.text(query), {"n": name}).scalar()
    shape = re.sub(r'[\s"()]', "", str(found or "").lower())
    return f"{column},org,atwhere{column}isnotnull" in shape


def upgrade() -> None:
    for name, column in IDS.items():
        if _built(name, column):  # beforehand (CONCURRENTLY, docs/deployment.md)
            continue
        op.drop_index(name, table_name="request_log")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "request_log", [column, "org", "at"],
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in IDS.items():
        op.drop_index(name, table_name="request_log")
        op.create_index(name, "request_log", [column, "org", "at"])
