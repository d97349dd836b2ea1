"""The status page's daily bars: each component's requests and faults per UTC day, summed in
the store (one statement: a GROUP BY over each rollup grain's part of the window, day rows
where compaction has made them, hour and minute rows not compacted yet — telemetry/
compaction.py — so every request is counted once), reaching back the page's
``history_days`` (90) as long as day rows are kept (``rollup_day_days``, 400). Days without
rows show "no data", never "up". Past days never change, so they are summed once per
process; only today is summed again.

Uptime of a day: 1 − faults / judged requests (the service's fault classes over all requests
but those whose client left). A day without requests has no uptime."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, union_all

from gatehouse.status.components import FAULTS, NOT_JUDGED, Component
from gatehouse.store.db import Store
from gatehouse.store.rollups import TABLES, plan, where_of

DAY_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class Day:
    day: int  # days since the epoch (UTC)
    requests: int
    faults: int

    @property
    def uptime(self) -> float | None:
        return 1 - self.faults / self.requests if self.requests else None


def tally(rows: Iterable[Any], components: Iterable[Component]) -> dict[tuple[str, int], Day]:
    """(component key, day) → its Day, from rows of (day, component, model, class, requests)."""
    sums: dict[tuple[str, int], list[int]] = {}
    comps = list(components)
    for day, component, model, error_class, requests in rows:
        if error_class in NOT_JUDGED:
            continue
        for c in comps:
            if c.matches(component, model):
                cell = sums.setdefault((c.key, int(day)), [0, 0])
                cell[0] += int(requests)
                if error_class in FAULTS:
                    cell[1] += int(requests)
    return {key: Day(key[1], r, f) for key, (r, f) in sums.items()}


class DailyHistory:
    def __init__(self, store: Store, components: Iterable[Component], days: int) -> None:
        self.store = store
        self.components = list(components)
        self.days = days
        self.cache: dict[tuple[str, int], Day] = {}
        self.done_before: int | None = None  # days before this one are summed for good

    async def refresh(self, now: float) -> dict[tuple[str, int], Day]:
        today = int(now // 86400)
        since = self.done_before if self.done_before is not None else today - self.days + 1
        selects = []
        for part in plan(since * DAY_MINUTES, (today + 1) * DAY_MINUTES, "day"):
            t = TABLES[part.grain]
            day = (t.minute // DAY_MINUTES).label("day")
            selects.append(select(day, t.component, t.model, t.error_class,
                                  func.sum(t.requests)).where(and_(*where_of(part)))
                           .group_by(day, t.component, t.model, t.error_class))
        query = selects[0] if len(selects) == 1 else union_all(*selects)
        async with self.store.session() as s:
            rows = (await s.execute(query)).all()
        fresh = tally(((int(d), c, m, e, n) for d, c, m, e, n in rows), self.components)
        self.cache = {k: v for k, v in self.cache.items()
                      if since > k[1] > today - self.days}
        self.cache.update(fresh)
        self.done_before = today
        return self.cache
