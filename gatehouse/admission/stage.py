"""The admission stage: a slot of the model's capacity before the upstream call, held until
the answer (or the stream) ends, the client leaves or anything fails — released on every path.

Refusals are 503 ``at_capacity`` with ``Retry-After`` from the drain rate, answered before any
upstream contact and without holding a queue place. Capacity is per replica
(``[models.NAME] max_concurrency``); with N replicas each holds its own share."""

from __future__ import annotations

import time

from gatehouse.admission.adaptive import GradientLimit
from gatehouse.admission.gate import Gate, Shed
from gatehouse.config import Settings
from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import AtCapacity
from gatehouse.telemetry.metrics import Metrics

NOTE = "admission"


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

    def _depth(self, model: str, gate: Gate, cls: str) -> None:
        self.metrics.queue_depth.labels(model, cls).set(gate.queued(cls))

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
        self._depth(model, gate, cls)
        try:
            waited = await gate.acquire(cls, org)
        except Shed as shed:
            self.metrics.admission.labels(model, cls, shed.reason).inc()
            raise AtCapacity(
                f"{model} is at capacity right now; try again in {round(shed.retry_after)} s.",
                retry_after=shed.retry_after, cause=f"shed: {shed.reason} ({cls})") from None
        finally:  # admitted, shed or cancelled while waiting: the gauge follows
            self._depth(model, gate, cls)
        self.metrics.admission.labels(model, cls, "admitted").inc()
        self.metrics.queue_wait.labels(model, cls).observe(waited)
        ctx.notes[NOTE] = (gate, gradient, cls, gate.now(), time.perf_counter())

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        held = ctx.notes.pop(NOTE, None)
        if held is None:
            return
        gate, gradient, cls, started, admitted = held
        gate.release(cls, started)
        if gradient is not None and ctx.first_byte_at is not None and outcome.status < 500:
            if gradient.sample(ctx.first_byte_at - admitted):
                gate.resize(gradient.limit, self.settings.admission.reserved_share)
                self.metrics.concurrency_limit.labels(ctx.model or "").set(gradient.limit)
