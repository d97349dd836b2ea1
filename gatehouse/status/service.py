"""The status page at run time, in every worker: a detector loop that runs only where this
worker holds the cluster's lease, and a snapshot loop that rebuilds the public answers from
the store every few seconds — so answering ``/status`` and ``/api/v2/*.json`` is a dict
lookup, and they are still answered (from the last snapshot) while the store is down.

One detector for the cluster: a lease row in the store, taken or kept with one conditional
UPDATE (status/lease in docs/status.md). The store, not the state layer: it is where the
incidents are written, it is shared by every replica even when ``state_url`` is
``memory://`` (one worker's memory is not another's), and a replica that cannot reach it
could not write an incident anyway. A worker that takes the lease over starts from the
component states the last holder stored."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gatehouse.config import ConfigError, Settings
from gatehouse.status.components import FAULTS, NOT_JUDGED, components_of
from gatehouse.status.detector import KEEP_MINUTES, Counts, Detector, Policy
from gatehouse.status.feeds import PATHS as FEEDS
from gatehouse.status.feeds import atom, rss
from gatehouse.status.history import DailyHistory
from gatehouse.status.incidents import Incidents, maintenance_status
from gatehouse.status.page import render_page
from gatehouse.status.statuspage import View, documents
from gatehouse.status.webhooks import Target, Webhooks, changes
from gatehouse.store.db import Store
from gatehouse.store.rollups import RollupRows
from gatehouse.store.status import StatusRecords
from gatehouse.telemetry.histogram import Histogram, lower_edge

log = logging.getLogger("gatehouse.status")
REFETCH_MINUTES = 3  # minutes read again each tick: their rows may still be arriving


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    etag: str
    content_type: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    built_at: float
    answers: dict[str, Answer]  # by path: /status, /api/v2/summary.json, …


def answer(body: bytes, content_type: str) -> Answer:
    return Answer(body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"', content_type)


def slow_count(latency_json: str, ttfb_json: str, limit_ms: float) -> int:
    """Answers of a rollup row whose first byte (or, without one, the whole answer) came
    later than ``limit_ms``: the buckets wholly above it."""
    ttfb = Histogram.from_json(orjson.loads(ttfb_json))
    h = ttfb if ttfb.counts else Histogram.from_json(orjson.loads(latency_json))
    return sum(n for b, n in h.counts.items() if lower_edge(b) >= limit_ms)


class StatusService:
    def __init__(self, settings: Settings, store: Store,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings.status
        self.url = self.settings.url.rstrip("/") or \
            f"http://{settings.server.host}:{settings.server.port}"
        self.components = components_of(settings)
        self.store = store
        self.records = StatusRecords(store)
        self.incidents = Incidents(self.records, self.components, clock)
        self.rows = RollupRows(store)
        self.history = DailyHistory(store, self.components, self.settings.history_days)
        self.keep_days = settings.telemetry.rollup_day_days  # the daily bars' reach
        self.clock = clock
        self.holder = f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leader = False
        self.detector = self._new_detector()
        self.loaded_to: int | None = None  # the newest minute read into the detector
        self.snapshot: Snapshot | None = None
        self.started = clock()
        self._tasks: list[asyncio.Task[None]] = []
        # one snapshot made at a time: an operator's change refreshes at once beside the
        # periodic refresh, and the one that read the store first, finishing last, put the
        # older page back (and announced its incidents to the webhooks as changes again)
        self._refreshing = asyncio.Lock()
        self.webhooks = Webhooks(
            [*(Target(u) for u in self.settings.webhook_urls),
             *(Target(u, slack=True) for u in self.settings.slack_webhook_urls)],
            self._secret(settings), clock=clock)
        self._seen: dict[str, tuple[str, str]] | None = None

    def _secret(self, settings: Settings) -> bytes | None:
        name = self.settings.webhook_secret_env
        if not name:
            return None
        value = os.environ.get(name)
        if not value:
            raise ConfigError(settings.source, "status.webhook_secret_env",
                              f"environment variable {name} is not set")
        return value.encode()

    def _new_detector(self) -> Detector:
        return Detector(self.components, Policy.of(self.settings))

    # -- the detector -------------------------------------------------------------------
    async def tick(self) -> None:
        now = self.clock()
        ttl = max(3 * self.settings.tick_seconds, 10.0)
        if not await self.records.lease(self.holder, ttl, now):
            self.leader = False
            return
        if not self.leader:  # taken over: start from what the last holder stored
            self.leader, self.loaded_to = True, None
            self.detector = self._new_detector()
            self.detector.restore(await self.records.component_states())
        await self._load(now)
        live = await self.records.listing(kind="maintenance", live_only=True)
        for m in live:  # past their end: completed for good (and no longer "live")
            if maintenance_status(m.row, now) == "completed":
                m.row.status, m.row.resolved_at = "completed", m.row.scheduled_until or now
                await self.records.save(m.row)
        view = View(now, "", "", self.components, {}, live)
        under = {key for m in view.live_maintenance() for key in m.components}
        changes = self.detector.tick(now, under)
        if changes:
            await self.records.set_component_states({c.component: c.new for c in changes},
                                                    now)
        await self.incidents.apply(changes, self.detector.statuses, self.detector.readings,
                                   now)

    async def _load(self, now: float) -> None:
        until = int(now // 60) + 1
        since = until - KEEP_MINUTES if self.loaded_to is None else \
            max(until - KEEP_MINUTES, self.loaded_to - REFETCH_MINUTES + 1)
        sums: dict[tuple[str, int], Counts] = {}
        for row in await self.rows.fetch(since, until):
            if row.error_class in NOT_JUDGED:
                continue
            for c in self.components:
                if not c.matches(row.component, row.model):
                    continue
                cell = sums.setdefault((c.key, row.minute), Counts())
                cell.requests += row.requests
                if row.error_class in FAULTS:
                    cell.faults += row.requests
                elif row.error_class == "ok":
                    cell.slow += slow_count(row.latency, row.ttfb, c.latency_ms)
        for key in (c.key for c in self.components):
            for minute in range(since, until):
                self.detector.observe(key, minute, sums.get((key, minute), Counts()))
        self.loaded_to = until - 1

    # -- the snapshot -------------------------------------------------------------------
    async def refresh(self) -> Snapshot:
        async with self._refreshing:
            return await self._refresh()

    async def _refresh(self) -> Snapshot:
        now = self.clock()
        detected = await self.records.component_states()
        incidents = await self.records.listing()
        days = await self.history.refresh(now)
        view = View(now, self.settings.page_name, self.url, self.components, detected,
                    incidents, self.started)
        docs = documents(view)
        answers = {f"/api/v2/{path}": answer(orjson.dumps(doc), "application/json")
                   for path, doc in docs.items()}
        html = await render_page(view, docs["summary.json"], days, self.settings.history_days,
                                 self.keep_days)
        answers["/status"] = answer(html.encode(), "text/html; charset=utf-8")
        for path, text in (("/status/history.atom", atom(docs)),
                           ("/status/history.rss", rss(docs))):
            answers[path] = answer(text.encode(), FEEDS[path])
        self.snapshot = Snapshot(now, answers)
        self._announce(docs)
        return self.snapshot

    def _announce(self, docs: dict[str, dict[str, Any]]) -> None:
        """Hand the incidents that changed since the last snapshot to the webhooks — from
        the lease holder only, so the cluster sends each change once."""
        items: list[dict[str, Any]] = [
            *docs["incidents.json"]["incidents"],
            *docs["scheduled-maintenances.json"]["scheduled_maintenances"]]
        if self.leader:
            summary = docs["summary.json"]
            page = {**summary["page"], "status_indicator": summary["status"]["indicator"],
                    "status_description": summary["status"]["description"]}
            for event, incident in changes(self._seen, items):
                self.webhooks.notify(event, page, incident)
        self._seen = {i["id"]: (i["updated_at"], i["status"]) for i in items}

    # -- running ------------------------------------------------------------------------
    async def _every(self, seconds: float, work: Callable[[], object], what: str) -> None:
        while True:
            try:
                result = work()
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: try again next time
                log.warning("status: %s failed (%s); the last snapshot is served", what,
                            type(exc).__name__)
            await asyncio.sleep(seconds)

    async def start(self) -> None:
        if not self.settings.enabled:
            return
        try:  # ready with the gateway: the first snapshot before the first request
            await self.refresh()
        except Exception as exc:
            log.warning("status: no snapshot yet (%s); /status answers 503 until there is",
                        type(exc).__name__)
        self.webhooks.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self.settings.snapshot_seconds, self.refresh,
                                         "the snapshot")),
            loop.create_task(self._every(self.settings.tick_seconds, self.tick,
                                         "the detector")),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.webhooks.aclose()
        if self.leader:
            with contextlib.suppress(Exception):
                await self.records.release(self.holder)
