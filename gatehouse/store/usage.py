"""Usage history: per UTC day, org, project, key or user, and model — recorded in memory as
requests finish and written to the store in batches (one upsert per row every few seconds)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from gatehouse.store.db import Store
from gatehouse.store.flusher import Flusher
from gatehouse.store.tables import Project, UsageDaily

log = logging.getLogger("gatehouse.usage")
FLUSH_SECONDS = 5.0
GROUPS = ("project", "key", "user", "model", "day")

Row = tuple[str, str, str, str, str, str]  # day, org, project, key, user, model


@dataclass(slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gateway_counted: int = 0  # requests whose tokens the gateway counted

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.gateway_counted += other.gateway_counted


class UsageBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[Row, Totals] = defaultdict(Totals)
        self._flusher = Flusher(self.flush, FLUSH_SECONDS)
        self._day = (-1, "")  # (days since the epoch, its date): formatted once a day

    def day_of(self, at: float) -> str:
        """``at``'s UTC date, YYYY-MM-DD (strftime on every request cost ~2 % of a worker)."""
        n = int(at // 86400)
        if n != self._day[0]:
            self._day = (n, datetime.fromtimestamp(n * 86400, UTC).strftime("%Y-%m-%d"))
        return self._day[1]

    def record(self, at: float, org: str | None, project: str | None, key: str | None,
               user: str | None, model: str, prompt: int, completion: int,
               gateway_counted: bool = False) -> None:
        day = self.day_of(at)
        self._pending[(day, org or "", project or "", key or "", user or "", model)].add(
            Totals(1, prompt, completion, int(gateway_counted)))

    async def start(self) -> None:
        self._flusher.start()

    async def flush(self) -> None:
        batch, self._pending = self._pending, defaultdict(Totals)
        if not batch:
            return
        try:
            async with self.store.session() as s:
                for (day, org, project, key, user, model), t in batch.items():
                    stmt = self.store.insert(UsageDaily).values(
                        day=day, org_id=org, project_id=project, key_id=key, user_id=user,
                        model=model, requests=t.requests, prompt_tokens=t.prompt_tokens,
                        completion_tokens=t.completion_tokens,
                        gateway_counted=t.gateway_counted)
                    excluded = stmt.excluded
                    await s.execute(stmt.on_conflict_do_update(
                        index_elements=["day", "org_id", "project_id", "key_id", "user_id",
                                        "model"],
                        set_={"requests": UsageDaily.requests + excluded.requests,
                              "prompt_tokens": UsageDaily.prompt_tokens + excluded.prompt_tokens,
                              "completion_tokens": UsageDaily.completion_tokens
                              + excluded.completion_tokens,
                              "gateway_counted": UsageDaily.gateway_counted
                              + excluded.gateway_counted}))
                await s.commit()
        except Exception as exc:  # keep what could not be written for the next flush
            log.warning("could not write usage (%s); will retry", type(exc).__name__)
            for row, t in batch.items():
                self._pending[row].add(t)

    async def aclose(self) -> None:
        await self._flusher.aclose()

    async def report(self, org_id: str, by: list[str], since: float,
                     ) -> list[dict[str, object]]:
        """Totals for one org since a time, grouped by any of GROUPS (names, not ids)."""
        cols = {"project": Project.name, "key": UsageDaily.key_id, "user": UsageDaily.user_id,
                "model": UsageDaily.model, "day": UsageDaily.day}
        keys = [cols[b] for b in by]
        first_day = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d")
        query = (select(*keys, func.sum(UsageDaily.requests), func.sum(UsageDaily.prompt_tokens),
                        func.sum(UsageDaily.completion_tokens),
                        func.sum(UsageDaily.gateway_counted))
                 .select_from(UsageDaily)
                 .outerjoin(Project, Project.id == UsageDaily.project_id)
                 .where(UsageDaily.org_id == org_id, UsageDaily.day >= first_day)
                 .group_by(*keys).order_by(*keys))
        async with self.store.session() as s:
            rows = (await s.execute(query)).all()
        out: list[dict[str, object]] = []
        for row in rows:
            entry: dict[str, object] = {b: (row[i] or None) for i, b in enumerate(by)}
            requests, prompt, completion, counted = (int(v or 0) for v in row[len(by):])
            entry.update(requests=requests, prompt_tokens=prompt,
                         completion_tokens=completion, total_tokens=prompt + completion,
                         gateway_counted_requests=counted)
            out.append(entry)
        return out
