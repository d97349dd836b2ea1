"""status page: incidents and maintenances with their updates, component states, the
detector's lease

Revision ID: 0008_status
Revises: 0007_conversations
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_status"
down_revision = "0007_conversations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "status_incidents",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("impact", sa.String(16), nullable=False),
        sa.Column("automatic", sa.Boolean, nullable=False),
        sa.Column("acknowledged_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("monitoring_at", sa.Float),
        sa.Column("resolved_at", sa.Float),
        sa.Column("scheduled_for", sa.Float),
        sa.Column("scheduled_until", sa.Float),
        sa.Column("components", sa.Text, nullable=False),
        sa.Column("figures", sa.Text, nullable=False),
        sa.Column("postmortem", sa.Text),
        sa.Column("postmortem_at", sa.Float),
    )
    op.create_index("ix_status_incidents_created_at", "status_incidents", ["created_at"])
    op.create_index("ix_status_incidents_kind_resolved", "status_incidents",
                    ["kind", "resolved_at"])
    op.create_table(
        "status_incident_updates",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("incident_id", sa.String(16),
                  sa.ForeignKey("status_incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("affected", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_status_incident_updates_incident", "status_incident_updates",
                    ["incident_id", "created_at"])
    op.create_table(
        "status_component_states",
        sa.Column("component", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    lease = op.create_table(
        "status_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.bulk_insert(lease, [{"name": "detector", "holder": "", "expires_at": 0.0}])


def downgrade() -> None:
    op.drop_table("status_lease")
    op.drop_table("status_component_states")
    op.drop_index("ix_status_incident_updates_incident", "status_incident_updates")
    op.drop_table("status_incident_updates")
    op.drop_index("ix_status_incidents_kind_resolved", "status_incidents")
    op.drop_index("ix_status_incidents_created_at", "status_incidents")
    op.drop_table("status_incidents")
