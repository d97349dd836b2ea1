"""The quota stage: reserve before the upstream call, settle with the real usage after it.

Every answer it lets through carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``;
a refusal is 429 ``rate_limit_exceeded`` (minute/hour limits and concurrency, with
``Retry-After``) or 429 ``insufficient_quota`` (day/month budgets, ``x-should-retry: false``).
If the shared limiter cannot be reached, the tier's policy decides: ``fail_open`` counts on a
local limiter sized to this replica's share, ``fail_closed`` answers 503 ``quota_unavailable``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily

from gatehouse.config import Settings
from gatehouse.context import CANCELLED, Outcome, RequestContext
from gatehouse.edge.client import network_of
from gatehouse.errors import (
    GatehouseError,
    QuotaExceeded,
    QuotaUnavailable,
    RateLimited,
)
from gatehouse.identity.principal import Principal
from gatehouse.quota.limiter import Decision, Limiter, LimiterError
from gatehouse.quota.memory import MemoryLimiter
from gatehouse.quota.overrides import Overrides
from gatehouse.quota.policy import (
    PLANS_KEPT,
    Applicable,
    Charge,
    Estimate,
    applicable,
    charges_of,
    counts_tokens,
    estimate,
    meters_tokens,
    prompt_texts,
    settle_of,
)
from gatehouse.quota.tokenizer import Tokenizers
from gatehouse.quota.windows import format_reset
from gatehouse.store.flusher import stop_task
from gatehouse.store.usage import UsageBook
from gatehouse.telemetry.metrics import Metrics
from gatehouse.upstream.affinity import continued

log = logging.getLogger("gatehouse.quota")
RETRY_SHARED_AFTER = 2.0
GENERATES = frozenset({"chat.completions", "completions", "responses"})  # reserve an answer
METERED = GENERATES | {"embeddings"}  # endpoints whose tokens count against token limits  # seconds between probes of a shared limiter that failed


@dataclasses.dataclass(slots=True)
class Held:
    limiter: Limiter
    charges: list[Charge]
    estimate: Estimate


class QuotaStage:
    name = "quota"

    def __init__(self, limiter: Limiter, settings: Settings, metrics: Metrics,
                 clock: Callable[[], float] = time.time, book: UsageBook | None = None,
                 overrides: Overrides | None = None,
                 tokenizers: Tokenizers | None = None) -> None:
        self.shared = limiter
        self.tokenizers = tokenizers or Tokenizers({}, "chars")
        self.book = book
        self.overrides = overrides
        self.local = MemoryLimiter()
        self.settings = settings
        self.quota = settings.quota
        self.clock = clock
        # set when the shared limiter failed a request; then no request waits on it: a
        # background probe pings it every RETRY_SHARED_AFTER s and clears this when it answers
        # (a frozen Redis would otherwise cost every request of each retry window its timeout)
        self._shared_down = False
        self._probe: asyncio.Task[None] | None = None
        # labelled children looked up once (labels() costs µs on the hot path)
        self._decisions = {r: metrics.quota_decisions.labels(r) for r in (
            "allowed", "unavailable", "local", "too_large", "insufficient_quota",
            "rate_limited")}
        metrics.registry.register(RoundTrips(self))
        # the limits that apply, per principal and network, with the tier, overrides and
        # quota settings they were made from: made again when one of those is replaced (the
        # overrides every few seconds); the same list is handed out meanwhile, which lets
        # charges_of keep its counters' keys for the window
        self._applicable: dict[tuple[Principal, str | None],
                               tuple[object, object, object, list[Applicable]]] = {}

    def limits(self, ctx: RequestContext) -> list[Applicable]:
        """The limits that apply to the request (not to be changed: the list is shared)."""
        principal: Principal = ctx.principal
        tier = self.settings.tiers.get(principal.tier)
        ip, q = ctx.client_ip, self.quota  # the edge's resolved address (trusted proxies)
        network = network_of(ip, q.network_prefix_v4, q.network_prefix_v6) if ip else None
        found = self.overrides.snapshot if self.overrides else None
        key = (principal, network)
        hit = self._applicable.get(key)
        if hit is not None and hit[0] is tier and hit[1] is found and hit[2] is q:
            return hit[3]
        made = applicable(principal, tier, network, q, found)
        if len(self._applicable) >= PLANS_KEPT:
            self._applicable.clear()
        self._applicable[key] = (tier, found, q, made)
        return made

    def plan(self, ctx: RequestContext, est: Estimate, now: float) -> list[Charge]:
        return charges_of(self.limits(ctx), self.quota, est, now)

    async def enter(self, ctx: RequestContext) -> None:
        if not self.quota.enabled or ctx.principal is None:
            return
        # moderations, images, speech, stored responses: counted as requests, no tokens
        # a Responses follow-up with the conversation kept here, as the model will read it
        body = continued(ctx) if ctx.endpoint in METERED else None
        limits = self.limits(ctx)
        prompt = None
        texts = prompt_texts(body) if body else []  # once: estimate() reads them too
        if body and meters_tokens(limits):
            # a limit meters tokens: the prompt as the model's tokenizer counts it. Only then
            # (else ≈ 4 characters a token): the tokenizer is loaded on first need, and o200k
            # alone is 55-64 MB per worker
            tokenizer = await self.tokenizers.get(ctx.model)
            prompt = await tokenizer.count_async(texts)
        est = estimate(body, self.quota.default_completion_tokens, prompt,
                       generates=ctx.endpoint in GENERATES, texts=texts)
        if prompt is not None:
            ctx.counted_prompt = est.prompt
        now = self.clock()
        plan = charges_of(limits, self.quota, est, now)
        if not plan:
            ctx.quota_decision = "unlimited"  # no limit applies to this principal
            return
        limiter, plan, decision = await self._reserve(ctx, plan, now)
        headers = rate_headers(plan, decision, now)
        if not decision.allowed:
            assert decision.refused is not None
            ctx.quota_decision = "refused"  # the record names it by the error's code
            raise self._refusal(ctx.principal, plan[decision.refused],
                                decision.used[decision.refused], now, headers)
        ctx.quota_decision = "allowed" if limiter is self.shared else "local"
        self._decisions["allowed"].inc()
        ctx.response_headers.update(headers)
        ctx.notes["quota"] = Held(limiter, plan, est)

    async def _reserve(self, ctx: RequestContext, plan: list[Charge],
                       now: float) -> tuple[Limiter, list[Charge], Decision]:
        ttl = self.quota.reservation_ttl
        if not self._shared_down:
            try:
                return self.shared, plan, await self.shared.reserve(
                    ctx.request_id, [c.ask for c in plan], now, ttl)
            except LimiterError as exc:
                if not self._shared_down:
                    log.warning("shared limiter unreachable (%s); applying the failure policy "
                                "until it answers again", exc)
                    self._shared_down = True
                    self._probe = asyncio.get_running_loop().create_task(self._probe_shared())
        tier = self.settings.tiers.get(ctx.principal.tier)
        policy = (tier.on_limiter_error if tier else None) or self.quota.on_limiter_error
        if policy == "fail_closed":
            self._decisions["unavailable"].inc()
            ctx.quota_decision = "quota_unavailable"
            raise QuotaUnavailable("Usage limits cannot be checked right now, so the request "
                                   "was not started.", retry_after=RETRY_SHARED_AFTER,
                                   cause="limiter unreachable; policy fail_closed")
        self._decisions["local"].inc()
        share = self.quota.replicas
        local = [dataclasses.replace(c, ask=dataclasses.replace(
            c.ask, limit=max(1, math.ceil(c.ask.limit / share)))) for c in plan]
        return self.local, local, await self.local.reserve(
            ctx.request_id, [c.ask for c in local], now, ttl)

    def _refusal(self, principal: Principal, charge: Charge, used: int, now: float,
                 headers: dict[str, str]) -> GatehouseError:
        ask = charge.ask
        who = _who(principal, charge)
        if ask.amount > ask.limit:
            self._decisions["too_large"].inc()
            return RateLimited(
                f"Request too large for {charge.label} on {who}: limit {ask.limit}, requested "
                f"{ask.amount}. Send a shorter input or a smaller max_tokens.",
                unit="tokens", headers={**headers, "x-should-retry": "false"})
        if charge.budget:
            self._decisions["insufficient_quota"].inc()
            resets = datetime.fromtimestamp(charge.window_end, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return QuotaExceeded(
                f"You exceeded your {charge.label} budget on {who}: limit {ask.limit}, used "
                f"{used}, requested {ask.amount}. It resets at {resets}; see GET /v1/usage.",
                headers={**headers, "x-should-retry": "false"})
        self._decisions["rate_limited"].inc()
        wait = 1.0 if charge.unit == "concurrent" else max(0.001, charge.window_end - now)
        unit = "requests" if charge.unit in ("requests", "concurrent") else "tokens"
        return RateLimited(
            f"Rate limit reached for {charge.label} on {who}: limit {ask.limit}, used {used}, "
            f"requested {ask.amount}. Please try again in {format_reset(wait)}.",
            unit=unit, retry_after=wait, headers=headers)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        self._record(ctx)
        held: Held | None = ctx.notes.pop("quota", None)
        if held is None:
            return
        now = self.clock()
        settles = [settle_of(c, actual(c.unit, ctx, outcome, held.estimate), now)
                   for c in held.charges]
        try:
            await held.limiter.settle(ctx.request_id, settles, now)
        except LimiterError as exc:  # the reservation lapses after its ttl; usage is lost
            log.warning("could not settle %s (%s)", ctx.request_id, exc)

    def _record(self, ctx: RequestContext) -> None:
        """Every request that reached a backend, once: with its usage, or none (a refusal)."""
        principal: Principal | None = ctx.principal
        usage = ctx.usage
        if self.book is None or principal is None or not ctx.model or \
                usage is None and ctx.backend is None:
            return
        self.book.record(self.clock(), principal.org_id, principal.project_id,
                         principal.key_id, principal.user_id, ctx.model,
                         usage.prompt_tokens if usage else 0,
                         usage.completion_tokens if usage else 0,
                         usage is not None and usage.counted_by == "gateway")

    async def _probe_shared(self) -> None:
        """Ping the shared limiter until it answers; then requests use it again."""
        while True:
            await asyncio.sleep(RETRY_SHARED_AFTER)
            try:
                await self.shared.ping()
            except LimiterError:
                continue
            log.warning("shared limiter reachable again; counting there")
            self._shared_down = False
            self._probe = None
            return

    async def start(self) -> None:
        await self.shared.prepare()
        if self._tiers_meter_tokens():
            # a token limit counts every prompt with the model's tokenizer: load them now,
            # before the first request — quicktok's loads (cl100k_base; o200k_base where the
            # install has no compiled counter) take 1-4 s and hold the GIL, so on first use
            # they stalled every request of the worker, not only the first
            models = [*self.settings.models, *([self.settings.demo.model]
                                                if self.settings.demo.enabled else [])]
            for model in models:
                await self.tokenizers.get(model)

    def _tiers_meter_tokens(self) -> bool:
        """Whether a configured limit counts prompt tokens (a project's override may add
        one later: its models' tokenizers are then loaded on first use)."""
        return any(value is not None and counts_tokens(name)
                   for tier in self.settings.tiers.values()
                   for limits in (tier.limits, tier.project_limits, tier.org_limits)
                   for name, value in limits.model_dump().items())

    async def aclose(self) -> None:
        await stop_task(self._probe)
        await self.shared.aclose()


def actual(unit: str, ctx: RequestContext, outcome: Outcome, est: Estimate) -> int:
    """What to commit for one counter once the request is over."""
    if unit == "concurrent":
        return 0
    usage = ctx.usage
    if usage is not None:  # the upstream said what it used (streams included)
        if unit == "requests":
            return 1
        return usage.completion_tokens if unit == "completion_tokens" else usage.total_tokens
    started = ctx.first_byte_at is not None
    guess = est.completion if unit == "completion_tokens" else est.total
    if outcome.kind == "ok" and outcome.status < 400 or \
            outcome.kind == "client_disconnected" and (started or left_waiting(ctx)):
        # an answer without usage, or a client that left mid-answer or while a backend was
        # working on its request (a whole answer is generated before its first byte): charge
        # the estimate, so leaving early never dodges a limit
        return 1 if unit == "requests" else guess
    if not started or outcome.status >= 500 or outcome.kind == "upstream_aborted":
        return 0  # never reached a model, or the service failed: not the client's to pay
    return 1 if unit == "requests" else 0  # the backend refused the request itself (4xx)


def left_waiting(ctx: RequestContext) -> bool:
    """The client left while a backend had its request (the call cancelled in flight)."""
    return bool(ctx.attempts) and ctx.attempts[-1].endswith(":" + CANCELLED)


def _who(principal: Principal, charge: Charge) -> str:
    if charge.scope == "key":
        return f"key {principal.key_display or principal.key_id}"
    if charge.scope == "project":
        return f"project {principal.org}/{principal.project}"
    if charge.scope == "org":
        return f"org {principal.org}"
    if charge.scope == "user":
        return f"your account ({principal.user_email})"
    return f"your network ({charge.scope_id})"


def rate_headers(plan: list[Charge], decision: Decision, now: float) -> dict[str, str]:
    """x-ratelimit-* from the tightest non-budget limit of each kind, after this request."""
    best: dict[str, tuple[int, int, float]] = {}
    for charge, used in zip(plan, decision.used, strict=True):
        if charge.budget:
            continue
        kind = "requests" if charge.unit in ("requests", "concurrent") else "tokens"
        taken = charge.ask.amount if decision.allowed else 0
        remaining = max(0, charge.ask.limit - used - taken)
        if kind not in best or remaining < best[kind][1]:
            reset = 0.0 if charge.unit == "concurrent" else charge.window_end - now
            best[kind] = (charge.ask.limit, remaining, reset)
    headers: dict[str, str] = {}
    for kind, (limit, remaining, reset) in best.items():
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        headers[f"x-ratelimit-reset-{kind}"] = format_reset(reset)
    return headers


class RoundTrips:
    """``gatehouse_quota_round_trips_total{kind}``: the shared limiter's round trips, read at
    scrape time (the limiter counts them; the quota stage may swap its limiter)."""

    def __init__(self, stage: QuotaStage) -> None:
        self.stage = stage

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "gatehouse_quota_round_trips", "Round trips to the shared limiter (Redis), by what "
            "they carried: reserve (a request's check, queued settles riding along), settle "
            "(queued settles sent on their own, off the request path), read (usage reads, "
            "pings, the script's load at startup).", labels=["kind"])
        for kind, n in self.stage.shared.round_trips.items():
            family.add_metric([kind], n)
        yield family
