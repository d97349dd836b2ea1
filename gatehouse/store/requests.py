"""The request log in the store: rows written in batches, found by any of a request's ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import delete, select, union_all
from sqlalchemy.orm import aliased

from gatehouse.store.db import Store
from gatehouse.store.tables import RequestLogEntry
from gatehouse.telemetry.record import FIELDS, RequestRecord

MATCHES = 10  # rows returned for one id (a client request id may be reused by retries)


def _cut(text: str | None, n: int) -> str | None:
    return text if text is None or len(text) <= n else text[:n]


def row_of(r: RequestRecord) -> tuple[Any, ...]:
    """The record as a row in ``FIELDS`` order: text made here, off the request path, and
    cut to the column sizes (tables.py) where a client or an upstream chose its length."""
    return (r.at, r.request_id, r.client_request_id, r.ray_id, r.component, _cut(r.method, 16),
            _cut(r.path, 512), _cut(r.endpoint, 128), _cut(r.model, 128), r.stream, r.status,
            r.outcome, r.error_class, _cut(r.error_type, 64), _cut(r.error_code, 64),
            _cut(r.error_cause, 1024), r.org, r.project, r.key_id, r.user_id, r.tier,
            None if r.client is None else str(r.client), r.edge, r.quota, r.admission_wait_ms,
            orjson.dumps(r.attempts).decode(), _cut(r.backend, 128), r.upstream_status,
            _cut(r.upstream_request_id, 128), r.prompt_tokens, r.completion_tokens, r.total_tokens,
            r.usage_counted_by, r.latency_ms, r.ttfb_ms)


def record_of(entry: RequestLogEntry) -> RequestRecord:
    values = {name: getattr(entry, name) for name in FIELDS}
    values["attempts"] = orjson.loads(entry.attempts)
    return RequestRecord(**values)


class RequestRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, records: Sequence[RequestRecord]) -> None:
        if records:
            # (made rows a statement's worth at a time, between which the loop runs)
            await self.store.insert_many(RequestLogEntry.__tablename__, FIELDS, records,
                                         row_of)

    async def find(self, any_id: str, *, org: str | None = None,
                   user: str | None = None) -> list[RequestRecord]:
        """Records whose request id, client request id or Ray ID is ``any_id``, newest
        first; with ``org`` (or ``user``) only that org's (user's) own."""
        if "\x00" in any_id:  # no id was stored with one (a NUL is written as U+FFFD): not
            return []          # the U+FFFD record of another id, found by the store's guard
        e = RequestLogEntry
        # one search per id column, each on its own index (one OR, or the org's condition,
        # lets a planner without statistics choose to scan the org's rows instead)
        branches = []
        for column in (e.request_id, e.client_request_id, e.ray_id):
            branch = select(e).where(column == any_id)
            if org is not None:
                branch = branch.where(e.org == org)
            if user is not None:
                branch = branch.where(e.user_id == user)
            branches.append(branch)
        found = aliased(e, union_all(*branches).subquery())
        query = select(found).order_by(found.at.desc()).limit(MATCHES)
        async with self.store.session() as s:
            rows = (await s.scalars(query)).all()
        # (one request can match in two columns: its client request id may be its own id)
        unique = {row.request_id: row for row in rows}
        return [record_of(row) for row in unique.values()]

    async def prune(self, before: float) -> int:
        async with self.store.session() as s:
            result = await s.execute(delete(RequestLogEntry).where(RequestLogEntry.at < before))
            await s.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
