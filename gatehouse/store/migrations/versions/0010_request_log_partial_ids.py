"""request_log: the client request id and Ray ID indexes hold only the rows that have one

Most requests carry neither (a Ray ID is an edge answer's; a client request id is sent by a
few clients), and every row still cost an entry in both indexes: ~27 → ~19 µs of the store's
CPU a written record on SQLite (bench/flush_stall.py), and their size on disk. A lookup by
either id (``column = value``) implies the column is not null, so both stores' planners use the
partial index as before.

Revision ID: 0010_request_log_partial_ids
Revises: 0009_usage_counted_by
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_request_log_partial_ids"
down_revision = "0009_usage_counted_by"
branch_labels = None
depends_on = None

IDS = {"ix_request_log_client_request_id": "client_request_id",
       "ix_request_log_ray_id": "ray_id"}


def upgrade() -> None:
    for name, column in IDS.items():
        op.drop_index(name, table_name="request_log")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "request_log", [column, "org", "at"],
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in IDS.items():
        op.drop_index(name, table_name="request_log")
        op.create_index(name, "request_log", [column, "org", "at"])
