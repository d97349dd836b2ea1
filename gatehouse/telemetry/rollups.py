"""Minute rollups: every RequestRecord counted into its minute's cell — (component, model,
tier, org, project, error class) — with latency and time-to-first-byte histograms of fixed
buckets, and the cells written to the store every few seconds, off the request path.

Every record is counted, sampled out of the request log or not. Each replica adds rows of its
own counts and never rewrites them, so replicas cannot count a request twice and any window's
numbers are sums — histograms included (telemetry/histogram.py). Cells that could not be
written are kept for the next flush, up to ``MAX_CELLS``; beyond that (a store down for long)
the oldest minutes go first, their requests counted in ``gatehouse_rollups_dropped_total``.
Closed hours are folded into hour and day rows, and old rows deleted, by the compaction job
(telemetry/compaction.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from gatehouse.store.flusher import Flusher
from gatehouse.store.rollups import DIMENSIONS, RollupRows
from gatehouse.telemetry.histogram import Histogram
from gatehouse.telemetry.record import RequestRecord

log = logging.getLogger("gatehouse.telemetry")
FLUSH_SECONDS = 10.0
MAX_CELLS = 100_000

Key = tuple[int, str, str, str, str, str, str]  # minute, then DIMENSIONS


@dataclass(slots=True)
class Cell:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    admission_wait_ms: float = 0.0
    latency: Histogram = field(default_factory=Histogram)
    ttfb: Histogram = field(default_factory=Histogram)

    def merge(self, other: Cell) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.admission_wait_ms += other.admission_wait_ms
        self.latency.merge(other.latency)
        self.ttfb.merge(other.ttfb)


class Rollups:
    def __init__(self, rows: RollupRows, *, flush_seconds: float = FLUSH_SECONDS, max_cells: int = MAX_CELLS,
                 on_drop: Callable[[float], None] | None = None) -> None:
        self.rows = rows
        self.max_cells = max_cells
        self.on_drop = on_drop
        self.cells: dict[Key, Cell] = {}
        self._flusher = Flusher(self.flush, flush_seconds)

    def add(self, r: RequestRecord) -> None:
        key = (int(r.at // 60), r.component, r.model or "", r.tier or "", r.org or "",
               r.project or "", r.error_class)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        cell.requests += 1
        if r.prompt_tokens:
            cell.prompt_tokens += r.prompt_tokens
        if r.completion_tokens:
            cell.completion_tokens += r.completion_tokens
        if r.admission_wait_ms:
            cell.admission_wait_ms += r.admission_wait_ms
        cell.latency.add(r.latency_ms)
        if r.ttfb_ms is not None:
            cell.ttfb.add(r.ttfb_ms)

    async def start(self) -> None:
        self._flusher.start()

    async def flush(self) -> None:
        cells, self.cells = self.cells, {}
        if cells:
            rows = [(*key, c.requests, c.prompt_tokens, c.completion_tokens,
                     c.admission_wait_ms, orjson.dumps(c.latency.to_json()).decode(),
                     orjson.dumps(c.ttfb.to_json()).decode()) for key, c in cells.items()]
            try:
                await self.rows.add(rows)
            except Exception as exc:  # keep the counts for the next flush
                log.warning("rollups: could not write %d cells (%s); will retry", len(rows),
                            type(exc).__name__)
                for key, cell in cells.items():
                    mine = self.cells.get(key)
                    if mine is None:
                        self.cells[key] = cell
                    else:
                        mine.merge(cell)
                self._bound()

    def _bound(self) -> None:
        """Keep at most ``max_cells`` waiting: drop the oldest minutes' cells, counted."""
        over = len(self.cells) - self.max_cells
        if over <= 0:
            return
        lost = 0
        for key in sorted(self.cells)[:over]:  # keys sort by minute first
            lost += self.cells.pop(key).requests
        log.warning("rollups: %d cells (%d requests) dropped; the store is not taking them",
                    over, lost)
        if self.on_drop is not None:
            self.on_drop(lost)

    async def aclose(self) -> None:
        await self._flusher.aclose()


__all__ = ["DIMENSIONS", "Cell", "Rollups"]
