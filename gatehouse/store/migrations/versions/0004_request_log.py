"""request log: one row per request, looked up by request id, client request id or Ray ID

Revision ID: 0004_request_log
Revises: 0003_edge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_request_log"
down_revision = "0003_edge"
branch_labels = None
depends_on = None

INDEXES = {"ix_request_log_at": ["at"],
           "ix_request_log_client_request_id": ["client_request_id", "org", "at"],
           "ix_request_log_ray_id": ["ray_id", "org", "at"],
           "ix_request_log_org_at": ["org", "at"]}


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("request_id", sa.String(30), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("client_request_id", sa.String(512)),
        sa.Column("ray_id", sa.String(16)),
        sa.Column("component", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("error_class", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_cause", sa.String(1024)),
        sa.Column("org", sa.String(40)),
        sa.Column("project", sa.String(40)),
        sa.Column("key_id", sa.String(40)),
        sa.Column("user_id", sa.String(40)),
        sa.Column("tier", sa.String(64)),
        sa.Column("client", sa.String(45)),
        sa.Column("edge", sa.String(16)),
        sa.Column("quota", sa.String(32)),
        sa.Column("admission_wait_ms", sa.Float),
        sa.Column("attempts", sa.Text, nullable=False),
        sa.Column("backend", sa.String(128)),
        sa.Column("upstream_status", sa.Integer),
        sa.Column("upstream_request_id", sa.String(128)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("total_tokens", sa.Integer),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttfb_ms", sa.Float),
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "request_log", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, "request_log")
    op.drop_table("request_log")
