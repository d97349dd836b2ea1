"""The request log in the store: rows written in batches, found by any of a request's ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import delete, or_, select

from gatehouse.store.db import Store
from gatehouse.store.tables import RequestLogEntry
from gatehouse.telemetry.record import FIELDS, RequestRecord

# column sizes (tables.py): text is cut to fit rather than failing a whole batch
_LIMITS = {"client_request_id": 512, "ray_id": 16, "component": 16, "method": 16,
           "path": 512, "endpoint": 128, "model": 128, "outcome": 24, "error_class": 16,
           "error_type": 64, "error_code": 64, "error_cause": 1024, "org": 40,
           "project": 40, "key_id": 40, "user_id": 40, "tier": 64, "client": 45, "edge": 16,
           "quota": 32, "backend": 128}
_CUT = tuple(_LIMITS.get(name) for name in FIELDS)
_ATTEMPTS = FIELDS.index("attempts")
MATCHES = 10  # rows returned for one id (a client request id may be reused by retries)


def row_of(record: RequestRecord) -> tuple[Any, ...]:
    """The record as a row in ``FIELDS`` order (text made and cut here, off the request path)."""
    out = []
    for name, n in zip(FIELDS, _CUT, strict=True):
        value = getattr(record, name)
        if n is not None and value is not None:
            value = str(value)[:n]
        out.append(value)
    out[_ATTEMPTS] = orjson.dumps(record.attempts).decode()
    return tuple(out)


def record_of(entry: RequestLogEntry) -> RequestRecord:
    values = {name: getattr(entry, name) for name in FIELDS}
    values["attempts"] = orjson.loads(entry.attempts)
    return RequestRecord(**values)


class RequestRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, records: Sequence[RequestRecord]) -> None:
        if records:
            await self.store.insert_many(RequestLogEntry.__tablename__, FIELDS,
                                         [row_of(r) for r in records])

    async def find(self, any_id: str, *, org: str | None = None,
                   user: str | None = None) -> list[RequestRecord]:
        """Records whose request id, client request id or Ray ID is ``any_id``, newest
        first; with ``org`` (or ``user``) only that org's (user's) own."""
        e = RequestLogEntry
        query = select(e).where(or_(e.request_id == any_id, e.client_request_id == any_id,
                                    e.ray_id == any_id))
        if org is not None:
            query = query.where(e.org == org)
        if user is not None:
            query = query.where(e.user_id == user)
        async with self.store.session() as s:
            rows = (await s.scalars(query.order_by(e.at.desc()).limit(MATCHES))).all()
        return [record_of(row) for row in rows]

    async def prune(self, before: float) -> int:
        async with self.store.session() as s:
            result = await s.execute(delete(RequestLogEntry).where(RequestLogEntry.at < before))
            await s.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
