"""The status page in the store: incidents and maintenances with their updates, component
states, the detector's lease, and example failed requests for a postmortem."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, delete, or_, select, update

from gatehouse.store.db import Store
from gatehouse.store.tables import (
    RequestLogEntry,
    StatusComponentState,
    StatusIncident,
    StatusIncidentUpdate,
    StatusLease,
)

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
RECENT = 200  # incidents and maintenances a snapshot holds besides the live ones


def new_id() -> str:
    """12 lowercase letters and digits, as Statuspage's ids."""
    return "".join(secrets.choice(ALPHABET) for _ in range(12))


@dataclass(slots=True)
class Incident:
    """An incident (or maintenance) with its updates, newest first."""

    row: StatusIncident
    updates: list[StatusIncidentUpdate] = field(default_factory=list)

    @property
    def components(self) -> list[str]:
        found: list[str] = orjson.loads(self.row.components)
        return found

    @property
    def figures(self) -> dict[str, Any]:
        found: dict[str, Any] = orjson.loads(self.row.figures)
        return found


class StatusRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the lease ----------------------------------------------------------------------
    async def lease(self, holder: str, ttl: float, now: float, name: str = "detector") -> bool:
        """Take or keep the lease: one conditional UPDATE, atomic on SQLite and PostgreSQL,
        so of replicas asking at once exactly one holds it."""
        lease = StatusLease
        async with self.store.session() as s:
            result = await s.execute(update(lease).where(
                lease.name == name, or_(lease.holder == holder, lease.expires_at < now)
            ).values(holder=holder, expires_at=now + ttl))
            await s.commit()
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def release(self, holder: str, name: str = "detector") -> None:
        async with self.store.session() as s:
            await s.execute(update(StatusLease).where(
                StatusLease.name == name, StatusLease.holder == holder).values(expires_at=0.0))
            await s.commit()

    # -- component states ---------------------------------------------------------------
    async def component_states(self) -> dict[str, str]:
        async with self.store.session() as s:
            rows = (await s.scalars(select(StatusComponentState))).all()
        return {r.component: r.status for r in rows}

    async def set_component_states(self, states: dict[str, str], now: float) -> None:
        async with self.store.session() as s:
            if states:
                await s.execute(delete(StatusComponentState).where(
                    StatusComponentState.component.in_(list(states))))
            s.add_all(StatusComponentState(component=k, status=v, updated_at=now)
                      for k, v in states.items())
            await s.commit()

    # -- incidents ----------------------------------------------------------------------
    async def create(self, row: StatusIncident, first: StatusIncidentUpdate) -> Incident:
        row.id = row.id or new_id()
        first.id = new_id()
        first.incident_id = row.id
        async with self.store.session() as s:
            s.add(row)
            await s.flush()
            s.add(first)
            await s.commit()
        return Incident(row, [first])

    async def save(self, row: StatusIncident,
                   update_: StatusIncidentUpdate | None = None) -> None:
        """Write ``row``'s changed fields, and a new update if given."""
        async with self.store.session() as s:
            await s.merge(row)
            if update_ is not None:
                update_.id = new_id()
                update_.incident_id = row.id
                s.add(update_)
            await s.commit()

    async def get(self, incident_id: str) -> Incident | None:
        async with self.store.session() as s:
            row = await s.get(StatusIncident, incident_id)
        if row is None:
            return None
        return (await self._with_updates([row]))[0]

    async def listing(self, *, kind: str | None = None, live_only: bool = False,
                      limit: int = RECENT) -> list[Incident]:
        """Newest first: the live ones (not resolved or completed) and the latest others."""
        i = StatusIncident
        query = select(i).order_by(i.created_at.desc()).limit(limit)
        if kind is not None:
            query = query.where(i.kind == kind)
        if live_only:
            query = query.where(i.resolved_at.is_(None))
        async with self.store.session() as s:
            rows = list((await s.scalars(query)).all())
            live = list((await s.scalars(select(i).where(i.resolved_at.is_(None)))).all())
        seen = {r.id for r in rows}
        rows += [r for r in live if r.id not in seen and (kind is None or r.kind == kind)]
        rows.sort(key=lambda r: r.created_at, reverse=True)
        return await self._with_updates(rows)

    async def open_automatic(self) -> Incident | None:
        i = StatusIncident
        async with self.store.session() as s:
            row = await s.scalar(select(i).where(
                i.kind == "incident", i.automatic.is_(True), i.resolved_at.is_(None)
            ).order_by(i.created_at.desc()).limit(1))
        return None if row is None else (await self._with_updates([row]))[0]

    async def _with_updates(self, rows: Sequence[StatusIncident]) -> list[Incident]:
        if not rows:
            return []
        u = StatusIncidentUpdate
        async with self.store.session() as s:
            found = (await s.scalars(select(u).where(u.incident_id.in_([r.id for r in rows]))
                                     .order_by(u.created_at.desc()))).all()
        by: dict[str, list[StatusIncidentUpdate]] = {}
        for row in found:
            by.setdefault(row.incident_id, []).append(row)
        return [Incident(r, by.get(r.id, [])) for r in rows]

    # -- evidence for a postmortem ------------------------------------------------------
    async def failed_requests(self, since: float, until: float, classes: Iterable[str],
                              cells: Iterable[tuple[str | None, str | None]],
                              limit: int = 5) -> list[str]:
        """Ids of requests that failed with one of ``classes`` between the times, in the
        cells ``(component, model)`` (None: any)."""
        e = RequestLogEntry
        matches = [and_(*([e.component == c] if c else []), *([e.model == m] if m else []))
                   for c, m in cells]
        query = select(e.request_id).where(
            e.at >= since, e.at <= until, e.error_class.in_(list(classes))
        ).order_by(e.at).limit(limit)
        if matches:
            query = query.where(or_(*matches))
        async with self.store.session() as s:
            return list((await s.scalars(query)).all())
