"""hour and day rollups: minute rows compacted (telemetry/compaction.py)

Revision ID: 0006_rollup_compaction
Revises: 0005_rollups
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_rollup_compaction"
down_revision = "0005_rollups"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column[object]]:
    return [
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
    ]


def upgrade() -> None:
    with op.batch_alter_table("rollup_minute") as batch:
        batch.add_column(sa.Column("compacted", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_rollup_minute_compacted_minute", "rollup_minute",
                    ["compacted", "minute"])
    op.create_table("rollup_hour", *_columns(),
                    sa.Column("compacted", sa.Boolean, nullable=False,
                              server_default=sa.false()))
    op.create_index("ix_rollup_hour_minute", "rollup_hour", ["minute"])
    op.create_index("ix_rollup_hour_org_minute", "rollup_hour", ["org", "minute"])
    op.create_index("ix_rollup_hour_compacted_minute", "rollup_hour", ["compacted", "minute"])
    op.create_table("rollup_day", *_columns())
    op.create_index("ix_rollup_day_minute", "rollup_day", ["minute"])
    op.create_index("ix_rollup_day_org_minute", "rollup_day", ["org", "minute"])


def downgrade() -> None:
    op.drop_table("rollup_day")
    op.drop_table("rollup_hour")
    op.drop_index("ix_rollup_minute_compacted_minute", "rollup_minute")
    with op.batch_alter_table("rollup_minute") as batch:
        batch.drop_column("compacted")
