"""minute rollups: requests per (component, model, tier, org, project, error class)

Revision ID: 0005_rollups
Revises: 0004_request_log
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rollups"
down_revision = "0004_request_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollup_minute",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("component", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("org", sa.String(40), nullable=False),
        sa.Column("project", sa.String(40), nullable=False),
        sa.Column("error_class", sa.String(16), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("admission_wait_ms", sa.Float, nullable=False),
        sa.Column("latency", sa.Text, nullable=False),
        sa.Column("ttfb", sa.Text, nullable=False),
    )
    op.create_index("ix_rollup_minute_minute", "rollup_minute", ["minute"])
    op.create_index("ix_rollup_minute_org_minute", "rollup_minute", ["org", "minute"])


def downgrade() -> None:
    op.drop_index("ix_rollup_minute_org_minute", "rollup_minute")
    op.drop_index("ix_rollup_minute_minute", "rollup_minute")
    op.drop_table("rollup_minute")
