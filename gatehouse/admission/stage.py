"""The admission stage: a slot of the model's capacity before the upstream call, held until
the answer (or the stream) ends, the client leaves or anything fails — released on every path.

Refusals are 503 ``at_capacity`` with ``Retry-After`` from the drain rate, answered before any
upstream contact and without holding a queue place. Capacity is per replica
(``[models.NAME] max_concurrency``); with N replicas each holds its own share."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gatehouse.admission.adaptive import GradientLimit
from gatehouse.admission.gate import Gate, Shed
from gatehouse.config import Settings
from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import AtCapacity, whole_seconds
from gatehouse.telemetry.metrics import Metrics

NOTE = "admission"


@dataclass(slots=True)
class _Series:
    depth: Any
    wait: Any
    admitted: Any
    shed: dict[str, Any]


def gates_from(settings: Settings) -> dict[str, tuple[Gate, GradientLimit | None]]:
    a = settings.admission
    classes = {n: (c.queue_timeout, c.max_queue) for n, c in a.classes.items()}
    models: dict[str, tuple[int | None, bool, int]] = {
        name: (m.max_concurrency, m.adaptive, m.min_concurrency)
        for name, m in settings.models.items()}
    if settings.demo.enabled:
        d = settings.demo
        models[d.model] = (d.max_concurrency, d.adaptive, d.min_concurrency)
    gates: dict[str, tuple[Gate, GradientLimit | None]] = {}
    for name, (limit, adaptive, minimum) in models.items():
        if limit is None:
            continue
        gradient = GradientLimit(limit, min(minimum, limit), limit) if adaptive else None
        gates[name] = (Gate(limit, reserved=a.reserved_share, classes=classes), gradient)
    return gates


class AdmissionStage:
    name = "admission"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.gates = gates_from(settings) if settings.admission.enabled else {}
        self.metrics = metrics
        self._series: dict[tuple[str, str], _Series] = {}

    def series(self, model: str, cls: str) -> _Series:
        """The metric children of one model × class, looked up once (labels() is a dict
        lookup under a lock — not free on every request)."""
        found = self._series.get((model, cls))
        if found is None:
            m = self.metrics
            found = self._series[(model, cls)] = _Series(
                m.queue_depth.labels(model, cls), m.queue_wait.labels(model, cls),
                m.admission.labels(model, cls, "admitted"),
                {r: m.admission.labels(model, cls, r)
                 for r in ("queue_full", "wait_too_long", "deadline")})
        return found

    def priority(self, ctx: RequestContext) -> str:
        tier = self.settings.tiers.get(ctx.principal.tier) if ctx.principal else None
        return tier.priority if tier else "low"

    async def enter(self, ctx: RequestContext) -> None:
        found = self.gates.get(ctx.model or "")
        if found is None:
            return
        gate, gradient = found
        cls = self.priority(ctx)
        org = (ctx.principal.org_id or ctx.principal.user_id or "") if ctx.principal else ""
        model = ctx.model or ""
        series = self.series(model, cls)
        series.depth.set(gate.queued(cls))
        try:
            waited = await gate.acquire(cls, org)
        except Shed as shed:
            series.shed[shed.reason].inc()
            raise AtCapacity(
                f"{model} is at capacity right now; try again in "
                f"{whole_seconds(shed.retry_after)} s.",
                retry_after=shed.retry_after, cause=f"shed: {shed.reason} ({cls})") from None
        finally:  # admitted, shed or cancelled while waiting: the gauge follows
            series.depth.set(gate.queued(cls))
        series.admitted.inc()
        series.wait.observe(waited)
        ctx.admission_wait = waited
        ctx.notes[NOTE] = (gate, gradient, cls, gate.now(), time.perf_counter())

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        held = ctx.notes.pop(NOTE, None)
        if held is None:
            return
        gate, gradient, cls, started, admitted = held
        gate.release(cls, started)
        if (gradient is not None and ctx.first_byte_at is not None and outcome.status < 500
                and gradient.sample(ctx.first_byte_at - admitted)):
            gate.resize(gradient.limit, self.settings.admission.reserved_share)
            self.metrics.concurrency_limit.labels(ctx.model or "").set(gradient.limit)
