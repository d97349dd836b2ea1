"""Which limits apply to a request, and what it reserves against each.

Scopes: the key (API tiers) or user (web tiers) with the tier's ``limits``; its project and
org with ``project_limits`` / ``org_limits``; the client network with ``[quota]
network_limits``. Each limit is one counter in its current window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from gatehouse.config import LimitSettings, QuotaSettings, TierSettings
from gatehouse.identity.principal import Principal
from gatehouse.quota.limiter import Ask, Settle
from gatehouse.quota.windows import span

# field → (window, unit, label, budget); unit says what the counter meters
LIMITS: dict[str, tuple[str, str, str, bool]] = {
    "requests_per_minute": ("minute", "requests", "requests per min (RPM)", False),
    "tokens_per_minute": ("minute", "tokens", "tokens per min (TPM)", False),
    "response_tokens_per_hour": ("hour", "completion_tokens", "response tokens per hour",
                                 False),
    "tokens_per_day": ("day", "tokens", "tokens per day", True),
    "tokens_per_month": ("month", "tokens", "tokens per month", True),
    "concurrent_requests": ("", "concurrent", "concurrent requests", False),
}
# the largest limit an override may set: beyond any real one, stored in a 64-bit column and
# counted exactly by the Redis limiter (its Lua numbers are doubles: exact to 2**53)
LIMIT_MAX = 10**15


@dataclass(frozen=True, slots=True)
class Charge:
    """One limit a request counts against: what it is, and the counter's ask."""

    scope: str        # "key" | "user" | "project" | "org" | "network"
    scope_id: str
    field: str        # a LIMITS key
    ask: Ask
    window_end: float

    @property
    def unit(self) -> str:
        return LIMITS[self.field][1]

    @property
    def budget(self) -> bool:
        return LIMITS[self.field][3]

    @property
    def label(self) -> str:
        return LIMITS[self.field][2]


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def estimate(body: dict[str, Any] | None, default_completion: int,
             prompt_tokens: int | None = None, generates: bool | None = None,
             texts: list[str] | None = None) -> Estimate:
    """Prompt tokens as counted by the model's tokenizer (``prompt_tokens``, from
    :func:`prompt_texts`) plus a few per message for roles and separators — or, without a
    count, from the text's length (≈ 4 characters a token); completion from
    ``max_completion_tokens`` / ``max_tokens`` / ``max_output_tokens`` (times ``n``) or the
    configured default when the endpoint ``generates`` (by default: a body with messages or a
    prompt).
    ``texts``: :func:`prompt_texts` of the body, when the caller has them already.
    Settling with the upstream's real usage corrects both."""
    if not body:
        return Estimate(0, 0)
    if texts is None:
        texts = prompt_texts(body)
    completion = body.get("max_completion_tokens") or body.get("max_tokens") \
        or body.get("max_output_tokens")
    if not isinstance(completion, int) or completion < 1:
        if generates is None:  # only embeddings generate nothing
            generates = "messages" in body or "prompt" in body
        completion = default_completion if generates else 0
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        completion *= n
    prompts = body.get("prompt")
    if isinstance(prompts, list) and len(prompts) > 1 and \
            not isinstance(prompts[0], int):  # completions: an answer per prompt
        completion *= len(prompts)
    if prompt_tokens is None:
        prompt_tokens = math.ceil(sum(map(len, texts)) / 4)
    return Estimate(prompt_of(body, texts, prompt_tokens), completion)


def prompt_of(body: dict[str, Any], texts: list[str], counted: int) -> int:
    """A prompt's tokens: ``counted`` for its ``texts`` (by the model's tokenizer, or from
    their length), one a token id, and 4 a piece for roles and separators — as the quota
    reserves it and as the gateway charges it when a backend reports no usage."""
    return counted + token_ids(body) + 4 * len(texts)


# what a message, a content part, a tool call or a Responses input item holds that reaches the
# model as text — every one present: a message's "content": null beside its "tool_calls" hid
# them, as a first found field ended the look
TEXT_FIELDS = frozenset(("content", "text", "refusal", "output", "arguments", "tool_calls",
                         "function"))


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """The pieces of text a request sends: strings, in arrays, in a message's ``content`` or
    ``tool_calls``, a part's ``text``; and the tool definitions, which the model reads too
    (as one piece of JSON). A loop over a stack, not recursion: the body's depth is the
    caller's. The body is JSON as parsed (exact ``dict``, ``list``, ``str``); an object's
    own keys are read, not the seven looked up in each: 94,000 objects took 40 ms, now 17."""
    texts: list[str] = []
    for field in ("tools", "functions"):
        given = body.get(field)
        if isinstance(given, list) and given:
            texts.append(orjson.dumps(given).decode())
    stack: list[Any] = [body.get(field)
                        for field in ("messages", "prompt", "input", "instructions")]
    pop, push, more, found = stack.pop, stack.append, stack.extend, texts.append
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            found(item)
        elif kind is list:
            more(item)
        elif kind is dict:
            for field, value in item.items():
                if field in TEXT_FIELDS and value is not None:
                    push(value)
    return texts


def token_ids(body: dict[str, Any]) -> int:
    """Tokens sent as ids rather than text (a completions ``prompt`` or an embeddings
    ``input`` of integers, or of arrays of them): one token each, counted by no tokenizer."""
    count = 0
    for field in ("prompt", "input"):
        given = body.get(field)
        if not isinstance(given, list):
            continue
        for item in given:
            if type(item) is int:
                count += 1
            elif isinstance(item, list):
                count += sum(type(v) is int for v in item)
    return count


def amount_for(unit: str, est: Estimate) -> int:
    if unit == "requests" or unit == "concurrent":
        return 1
    return est.completion if unit == "completion_tokens" else est.total


# one limit that applies: (scope, scope id, field of LIMITS, value)
Applicable = tuple[str, str, str, int]
_VALUES: dict[int, tuple[LimitSettings, dict[str, Any]]] = {}


def limit_values(limits: LimitSettings) -> dict[str, Any]:
    """``limits.model_dump()``, made once per settings object (not on every request)."""
    found = _VALUES.get(id(limits))
    if found is None or found[0] is not limits:
        if len(_VALUES) > 1024:  # settings reloaded many times: start over
            _VALUES.clear()
        found = _VALUES[id(limits)] = (limits, limits.model_dump())
    return found[1]


def applicable(principal: Principal, tier: TierSettings | None, network: str | None,
               quota: QuotaSettings,
               overrides: dict[tuple[str, str], dict[str, int | None]] | None = None,
               ) -> list[Applicable]:
    """The limits that apply to a request, by scope, overrides included."""
    scopes: list[tuple[str, str | None, LimitSettings | None]] = []
    if tier is not None:
        own = ("key", principal.key_id) if principal.kind == "key" else \
            ("user", principal.user_id) if principal.kind == "session" else ("tier", None)
        scopes += [(own[0], own[1], tier.limits),
                   ("project", principal.project_id, tier.project_limits),
                   ("org", principal.org_id, tier.org_limits)]
    scopes.append(("network", network, quota.network_limits))
    out: list[Applicable] = []
    for scope, scope_id, limits in scopes:
        if scope_id is None or limits is None:
            continue
        values = limit_values(limits)
        changed = overrides.get((scope, scope_id)) if overrides else None
        if changed:
            values = {**values, **changed}
        out += [(scope, scope_id, field, value) for field, value in values.items()
                if value is not None]
    return out


def counts_tokens(field: str) -> bool:
    """Whether the limit ``field`` counts prompt tokens (then the prompt is counted exactly)."""
    return LIMITS[field][1] == "tokens"


def meters_tokens(limits: list[Applicable]) -> bool:
    """True when one of the limits counts prompt tokens."""
    return any(counts_tokens(field) for _, _, field, _ in limits)


# one applicable limit's counter in the windows current at a time: (scope, scope id, field,
# limit, unit, key, the previous window's key, the window's end); a concurrency limit has no
# window (its key is fixed, its end is the request's reservation's)
_Counter = tuple[str, str, str, int, str, str, str | None, float | None]
# per limits list (by identity: QuotaStage.limits hands out the same list for a principal
# until its tier, overrides or settings change): [valid from, valid until) and its counters
_PLANS: dict[int, tuple[list[Applicable], float, float, list[_Counter]]] = {}
PLANS_KEPT = 4096


def _counters(limits: list[Applicable], now: float) -> tuple[float, float, list[_Counter]]:
    """The counters of ``limits`` at ``now``, and the span in which they stay the same."""
    out: list[_Counter] = []
    start, end = float("-inf"), float("inf")
    for scope, scope_id, field, value in limits:
        window, unit, _, _ = LIMITS[field]
        if window:
            s = span(window, now)
            start, end = max(start, s.start), min(end, s.end)
            # what the window before overshot is owed by this one
            out.append((scope, scope_id, field, value, unit,
                        counter_key(scope, scope_id, unit, s.tag),
                        counter_key(scope, scope_id, unit, span(window, s.start - 1).tag),
                        s.end))
        else:  # concurrency: no window, only reservations (released at the end)
            out.append((scope, scope_id, field, value, unit,
                        f"q:{scope}:{scope_id}:concurrent", None, None))
    return start, end, out


def charges_of(limits: list[Applicable], quota: QuotaSettings, est: Estimate,
               now: float) -> list[Charge]:
    """What a request of ``est`` reserves against each of ``limits`` at ``now``. The counters'
    keys are made once per window (not per request) for a limits list handed out again."""
    found = _PLANS.get(id(limits))
    if found is not None and found[0] is limits and found[1] <= now < found[2]:
        counters = found[3]
    else:
        start, end, counters = _counters(limits, now)
        if len(_PLANS) >= PLANS_KEPT:
            _PLANS.clear()
        _PLANS[id(limits)] = (limits, start, end, counters)
    out: list[Charge] = []
    for scope, scope_id, field, value, unit, key, previous, window_end in counters:
        amount = amount_for(unit, est)
        ends = now + quota.reservation_ttl if window_end is None else window_end
        out.append(Charge(scope, scope_id, field, Ask(key, value, amount, ends, previous), ends))
    return out


def charges(principal: Principal, tier: TierSettings | None, network: str | None,
            quota: QuotaSettings, est: Estimate, now: float,
            overrides: dict[tuple[str, str], dict[str, int | None]] | None = None,
            ) -> list[Charge]:
    return charges_of(applicable(principal, tier, network, quota, overrides), quota, est, now)


def counter_key(scope: str, scope_id: str, unit: str, tag: str) -> str:
    return f"q:{scope}:{scope_id}:{unit}:{tag}"


def settle_of(charge: Charge, amount: int, now: float) -> Settle:
    """Drop the charge's reservation; commit ``amount`` to the window current now (a request
    that outlived its window counts in the one it ended in)."""
    window = LIMITS[charge.field][0]
    if not window or now < charge.window_end:
        return Settle(charge.ask.key, amount, charge.window_end)
    s = span(window, now)
    return Settle(charge.ask.key, amount, charge.window_end,
                  counter_key(charge.scope, charge.scope_id, charge.unit, s.tag), s.end)
