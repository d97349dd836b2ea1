"""The status page's daily bars: each component's requests and faults per UTC day, summed in
the store from the minute rollups (one GROUP BY), so they reach back as far as minute rows are
kept (``[telemetry] rollup_minute_days``, 14 by default): older days show "no data", never
"up". Past days never change, so they are summed once per process; only today is summed again.

Uptime of a day: 1 − faults / judged requests (the service's fault classes over all requests
but those whose client left). A day without requests has no uptime."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from gatehouse.status.components import FAULTS, NOT_JUDGED, Component
from gatehouse.store.db import Store
from gatehouse.store.tables import RollupMinute

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
        r = RollupMinute
        day = (r.minute // DAY_MINUTES).label("day")
        query = select(day, r.component, r.model, r.error_class, func.sum(r.requests)).where(
            r.minute >= since * DAY_MINUTES).group_by(day, r.component, r.model, r.error_class)
        async with self.store.session() as s:
            rows = (await s.execute(query)).all()
        fresh = tally(((int(d), c, m, e, n) for d, c, m, e, n in rows), self.components)
        self.cache = {k: v for k, v in self.cache.items()
                      if since > k[1] > today - self.days}
        self.cache.update(fresh)
        self.done_before = today
        return self.cache
