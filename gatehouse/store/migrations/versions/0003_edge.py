"""edge: firewall rules added at run time, and Ray events

Revision ID: 0003_edge
Revises: 0002_usage_and_limits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_edge"
down_revision = "0002_usage_and_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edge_rules",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),               # JSON, as [[edge.rules]]
        sa.Column("note", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_edge_rules_position", "edge_rules", ["position"])
    op.create_table(
        "edge_rays",
        sa.Column("ray", sa.String(16), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("network", sa.String(49), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("user_agent", sa.String(512), nullable=False),
    )
    op.create_index("ix_edge_rays_at", "edge_rays", ["at"])


def downgrade() -> None:
    op.drop_index("ix_edge_rays_at", "edge_rays")
    op.drop_table("edge_rays")
    op.drop_index("ix_edge_rules_position", "edge_rules")
    op.drop_table("edge_rules")
