"""The admission stage: a slot of the model's capacity before the upstream call, held until
the answer (or the stream) ends, the client leaves or anything fails — released on every path.

Refusals are 503 ``at_capacity`` with ``Retry-After`` from the drain rate, answered before any
upstream contact and without holding a queue place. Capacity is per replica
(``[models.NAME] max_concurrency``); with N replicas each holds its own share."""

from __future__ import annotations

import time

from gatehouse.admission.gate import Gate, Shed
from gatehouse.config import Settings
from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import AtCapacity
from gatehouse.telemetry.metrics import Metrics

NOTE = "admission"


def gates_from(settings: Settings) -> dict[str, Gate]:
    a = settings.admission
    classes = {n: (c.queue_timeout, c.max_queue) for n, c in a.classes.items()}
    limits = {name: m.max_concurrency for name, m in settings.models.items()}
    if settings.demo.enabled:
        limits[settings.demo.model] = settings.demo.max_concurrency
    return {name: Gate(limit, reserved=a.reserved_share, classes=classes)
            for name, limit in limits.items() if limit is not None}


class AdmissionStage:
    name = "admission"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.gates = gates_from(settings) if settings.admission.enabled else {}
        self.metrics = metrics

    def _depth(self, model: str, gate: Gate, cls: str) -> None:
        self.metrics.queue_depth.labels(model, cls).set(gate.queued(cls))

    def priority(self, ctx: RequestContext) -> str:
        tier = self.settings.tiers.get(ctx.principal.tier) if ctx.principal else None
        return tier.priority if tier else "low"

    async def enter(self, ctx: RequestContext) -> None:
        gate = self.gates.get(ctx.model or "")
        if gate is None:
            return
        cls = self.priority(ctx)
        org = (ctx.principal.org_id or ctx.principal.user_id or "") if ctx.principal else ""
        model = ctx.model or ""
        self._depth(model, gate, cls)
        try:
            waited = await gate.acquire(cls, org)
        except Shed as shed:
            self._depth(model, gate, cls)
            self.metrics.admission.labels(model, cls, shed.reason).inc()
            raise AtCapacity(
                f"{model} is at capacity right now; try again in {round(shed.retry_after)} s.",
                retry_after=shed.retry_after, cause=f"shed: {shed.reason} ({cls})") from None
        self._depth(model, gate, cls)
        self.metrics.admission.labels(model, cls, "admitted").inc()
        self.metrics.queue_wait.labels(model, cls).observe(waited)
        ctx.notes[NOTE] = (gate, cls, time.monotonic())

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        held = ctx.notes.pop(NOTE, None)
        if held is not None:
            gate, cls, started = held
            gate.release(cls, started)
