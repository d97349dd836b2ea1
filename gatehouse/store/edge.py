"""The edge's durable records: rules added at run time, and Ray events."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, func, select

from gatehouse.store.accounts import new_id
from gatehouse.store.db import Store
from gatehouse.store.tables import EdgeRule, RayEvent

RAY_FIELDS = ("ray", "at", "action", "ip", "network", "rule", "reason", "method", "path",
              "user_agent")
_LIMITS = {"ray": 16, "action": 16, "ip": 45, "network": 49, "rule": 128, "reason": 256,
           "method": 16, "path": 512, "user_agent": 512}  # columns sizes: values cut to fit


class EdgeRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- rules ----------------------------------------------------------------------------
    async def rules(self) -> list[EdgeRule]:
        async with self.store.session() as s:
            return list((await s.scalars(
                select(EdgeRule).order_by(EdgeRule.position, EdgeRule.created_at))).all())

    async def add_rule(self, spec: Mapping[str, Any], note: str = "",
                       position: int | None = None) -> EdgeRule:
        """Store a (checked) rule; at the end of the list unless ``position`` says where
        (rules at or after it move down one)."""
        async with self.store.session() as s:
            last = await s.scalar(select(func.max(EdgeRule.position)))
            end = 0 if last is None else int(last) + 1
            if position is None or position >= end:
                position = end
            else:
                position = max(0, position)
                for row in (await s.scalars(select(EdgeRule).where(
                        EdgeRule.position >= position))).all():
                    row.position += 1
            row = EdgeRule(id=new_id("rule"), position=position,
                           spec=orjson.dumps(dict(spec)).decode(), note=note[:256],
                           created_at=time.time())
            s.add(row)
            await s.commit()
        return row

    async def remove_rule(self, rule_id: str) -> bool:
        async with self.store.session() as s:
            result = await s.execute(delete(EdgeRule).where(EdgeRule.id == rule_id))
            await s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- rays -----------------------------------------------------------------------------
    async def add_rays(self, events: Sequence[Sequence[Any]]) -> None:
        """Insert events, each a sequence in ``RAY_FIELDS`` order."""
        if not events:
            return
        cut = [_LIMITS.get(name) for name in RAY_FIELDS]

        def row(e: Sequence[Any]) -> tuple[Any, ...]:
            return tuple(str(v)[:n] if n else v for v, n in zip(e, cut, strict=True))

        await self.store.insert_many(RayEvent.__tablename__, RAY_FIELDS, events, row)

    async def ray(self, ray: str) -> dict[str, Any] | None:
        async with self.store.session() as s:
            row = await s.get(RayEvent, ray)
        return None if row is None else {k: getattr(row, k) for k in RAY_FIELDS}

    async def prune_rays(self, before: float) -> int:
        async with self.store.session() as s:
            result = await s.execute(delete(RayEvent).where(RayEvent.at < before))
            await s.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
