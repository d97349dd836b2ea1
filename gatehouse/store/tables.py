"""SQL tables of the store. Times are Unix seconds (float): the same on SQLite and PostgreSQL.

The account tables and the declarative base live in gatehouse/store/account_tables.py (what
reads only accounts imports just those) and are re-exported here: ``Base.metadata`` holds
every table once this module is imported (Alembic's env.py does)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.store.account_tables import ApiKey, Base, Org, Project, User

__all__ = ["ApiKey", "Base", "Org", "Project", "User"]  # and the tables below


class UsageDaily(Base):
    """What each key (or user) used of each model on each UTC day; "" stands for none."""

    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_org_day", "org_id", "day"),)  # an org's usage

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # of the requests, those whose tokens the gateway counted (the backend reported none)
    gateway_counted: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LimitOverride(Base):
    """An org's, project's, key's or user's own value for one limit (None: unlimited)."""

    __tablename__ = "limit_overrides"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    field: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class EdgeRule(Base):
    """A firewall rule added at run time (admin API, CLI); ``spec`` is its JSON form, as in
    ``[[edge.rules]]``. Rules are tried in ``position`` order, after the config file's."""

    __tablename__ = "edge_rules"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, index=True)
    spec: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(String(256), default="", server_default="")
    created_at: Mapped[float] = mapped_column(Float)


class RayEvent(Base):
    """One blocked (or challenged) request, by its Ray ID: what support looks up."""

    __tablename__ = "edge_rays"
    __table_args__ = (Index("ix_edge_rays_at", "at"),)

    ray: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16))   # deny | challenge
    ip: Mapped[str] = mapped_column(String(45))
    network: Mapped[str] = mapped_column(String(49))
    rule: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(256))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    user_agent: Mapped[str] = mapped_column(String(512))


# indexes that hold only the rows where a column is not null: index name -> that column.
# Migration 0010 made them so, and a new store's schema (gatehouse/store/fresh.py) makes them
# so. Not said on the Index: a dialect's ``*_where`` argument imports that dialect, and
# PostgreSQL's (its four drivers' modules, ~2 MB of RSS) would load in every worker on SQLite
PARTIAL_INDEXES = {"ix_request_log_client_request_id": "client_request_id",
                   "ix_request_log_ray_id": "ray_id"}


class RequestLogEntry(Base):
    """One request as the telemetry stage recorded it (gatehouse/telemetry/record.py): looked
    up by request id, client request id or Ray ID; ``org`` scopes a customer's lookups."""

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_at", "at"),
                      # with the org and time, so a customer's lookup is one index search
                      # (a planner would otherwise scan the org's rows by time). Both hold
                      # only the rows that have the id (most have neither): PARTIAL_INDEXES
                      Index("ix_request_log_client_request_id", "client_request_id", "org",
                            "at"),
                      Index("ix_request_log_ray_id", "ray_id", "org", "at"),
                      Index("ix_request_log_org_at", "org", "at"))

    request_id: Mapped[str] = mapped_column(String(30), primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    client_request_id: Mapped[str | None] = mapped_column(String(512))
    ray_id: Mapped[str | None] = mapped_column(String(16))
    component: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    endpoint: Mapped[str] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    stream: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(24))
    error_class: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_cause: Mapped[str | None] = mapped_column(String(1024))
    org: Mapped[str | None] = mapped_column(String(40))
    project: Mapped[str | None] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(String(40))
    tier: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(45))
    edge: Mapped[str | None] = mapped_column(String(16))
    quota: Mapped[str | None] = mapped_column(String(32))
    admission_wait_ms: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[str] = mapped_column(Text)  # JSON list of "backend" / "backend:why"
    backend: Mapped[str | None] = mapped_column(String(128))
    upstream_status: Mapped[int | None] = mapped_column(Integer)
    upstream_request_id: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    usage_counted_by: Mapped[str | None] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    ttfb_ms: Mapped[float | None] = mapped_column(Float)


class RollupColumns:
    """What every rollup table holds: the counts of one bucket of one (component, model,
    tier, org, project, error class). ``minute`` is the bucket's first minute (Unix time //
    60) in every table, so one query reads minutes, hours and days alike. ``latency`` and
    ``ttfb`` are fixed-bucket histograms (telemetry/histogram.py) as JSON."""

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    minute: Mapped[int] = mapped_column(BigInteger)  # Unix time // 60 of the bucket's start
    component: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))  # "" stands for none
    tier: Mapped[str] = mapped_column(String(64))
    org: Mapped[str] = mapped_column(String(40))
    project: Mapped[str] = mapped_column(String(40))
    error_class: Mapped[str] = mapped_column(String(16))
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    admission_wait_ms: Mapped[float] = mapped_column(Float)  # the sum over the requests
    latency: Mapped[str] = mapped_column(Text)
    ttfb: Mapped[str] = mapped_column(Text)


def rollup_indexes(table: str, *, folded: bool = True) -> tuple[Index, ...]:
    """By time, by org and time, and (tables compaction folds) by not-yet-compacted and time."""
    return (Index(f"ix_{table}_minute", "minute"), Index(f"ix_{table}_org_minute", "org", "minute"),
            *([Index(f"ix_{table}_compacted_minute", "compacted", "minute")] if folded else []))


class RollupMinute(RollupColumns, Base):
    """Requests of one minute, as one replica counted them between two of its flushes: rows
    are only ever added, so replicas never count a request twice, and a window's numbers are
    the sums of its rows. ``compacted``: the row's counts are in an hour row (in the same
    transaction that wrote that row: telemetry/compaction.py)."""

    __tablename__ = "rollup_minute"
    __table_args__ = rollup_indexes(__tablename__)

    compacted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RollupHour(RollupColumns, Base):
    """Minute rows compacted: one row per (hour, dimensions) per compaction run (a late minute
    row makes another). ``compacted``: the row's counts are in a day row."""

    __tablename__ = "rollup_hour"
    __table_args__ = rollup_indexes(__tablename__)

    compacted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RollupDay(RollupColumns, Base):
    """Hour rows compacted: one row per (UTC day, dimensions) per compaction run."""

    __tablename__ = "rollup_day"
    __table_args__ = rollup_indexes(__tablename__, folded=False)


class Conversation(Base):
    """One person's chat in the web app (gatehouse/web/chat.py); its messages are below."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ChatMessage(Base):
    """A message of a conversation, in ``seq`` order. An answer is saved while it streams:
    ``status`` is streaming, done, stopped (the person pressed stop), incomplete (the stream
    broke) or error (no answer: ``error`` holds the view the page shows)."""

    __tablename__ = "chat_messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_chat_messages_seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128), default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str | None] = mapped_column(Text)  # JSON: the error view
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

class StatusIncident(Base):
    """An incident or a scheduled maintenance of the status page (``kind``). ``components``:
    JSON list of the component keys it touches; ``figures``: JSON of what the detector
    measured (automatic incidents: peak error rate, …)."""

    __tablename__ = "status_incidents"
    __table_args__ = (Index("ix_status_incidents_created_at", "created_at"),
                      Index("ix_status_incidents_kind_resolved", "kind", "resolved_at"))

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # incident | maintenance
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24))
    impact: Mapped[str] = mapped_column(String(16))
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float] = mapped_column(Float)
    monitoring_at: Mapped[float | None] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float)
    scheduled_for: Mapped[float | None] = mapped_column(Float)
    scheduled_until: Mapped[float | None] = mapped_column(Float)
    components: Mapped[str] = mapped_column(Text, default="[]")
    figures: Mapped[str] = mapped_column(Text, default="{}")
    postmortem: Mapped[str | None] = mapped_column(Text)
    postmortem_at: Mapped[float | None] = mapped_column(Float)


class StatusIncidentUpdate(Base):
    """One update of an incident: its status then, what was said, and the components it
    changed (JSON list of ``{code, name, old_status, new_status}``)."""

    __tablename__ = "status_incident_updates"
    __table_args__ = (Index("ix_status_incident_updates_incident", "incident_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("status_incidents.id",
                                                        ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(24))
    body: Mapped[str] = mapped_column(Text)
    affected: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[float] = mapped_column(Float)


class StatusComponentState(Base):
    """A component's state as the detector (or an operator) last set it."""

    __tablename__ = "status_component_states"

    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(24))
    updated_at: Mapped[float] = mapped_column(Float)


class StatusLease(Base):
    """Who runs the detector for the whole cluster, until when (one row per lease)."""

    __tablename__ = "status_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float)


# rows a store starts with (migration 0008 adds them; a new store's schema too,
# gatehouse/store/fresh.py): the detector's lease is taken by updating its row
SEED_ROWS: dict[str, list[dict[str, object]]] = {
    "status_lease": [{"name": "detector", "holder": "", "expires_at": 0.0}],
}
