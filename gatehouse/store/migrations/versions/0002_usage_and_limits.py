"""usage rollups per day and limit overrides

Revision ID: 0002_usage_and_limits
Revises: 0001_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_usage_and_limits"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(10), primary_key=True),          # YYYY-MM-DD (UTC)
        sa.Column("org_id", sa.String(40), primary_key=True),       # "" when none
        sa.Column("project_id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_usage_daily_org_day", "usage_daily", ["org_id", "day"])
    op.create_table(
        "limit_overrides",
        sa.Column("scope", sa.String(16), primary_key=True),        # org | project | key | user
        sa.Column("scope_id", sa.String(40), primary_key=True),
        sa.Column("field", sa.String(40), primary_key=True),
        sa.Column("value", sa.BigInteger),                          # NULL: unlimited
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limit_overrides")
    op.drop_index("ix_usage_daily_org_day", "usage_daily")
    op.drop_table("usage_daily")
