"""who counted the tokens: usage_daily.gateway_counted, request_log.usage_counted_by

Revision ID: 0009_usage_counted_by
Revises: 0008_status
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_usage_counted_by"
down_revision = "0008_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_daily") as batch:
        batch.add_column(sa.Column("gateway_counted", sa.BigInteger, nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("usage_counted_by", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("usage_counted_by")
    with op.batch_alter_table("usage_daily") as batch:
        batch.drop_column("gateway_counted")
