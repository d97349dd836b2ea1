"""Usage in the shape of OpenAI's Usage API: ``GET /v1/organization/usage/completions`` (the
caller's own org, by its key or session) and ``/admin/v1/organization/usage/completions``
(the operator: every org) — one query, one reader, one answer.

Two sources, each used only for what it can answer exactly:

- the rollups (minutes, hours, days: telemetry/compaction.py) hold model, org and project per
  minute — any ``bucket_width``;
- the usage history (store/usage.py) holds API keys and users, per UTC day only — so a
  question about keys or users (``group_by``, ``api_key_ids``, ``user_ids``) takes
  ``bucket_width=1d``, and anything else is refused with a 400 naming the parameter, never
  answered from the wrong grain.

``num_model_requests`` counts requests the model answered (the rollups' ``ok`` class; the
usage history's metered requests); tokens are the metered ones. The gateway keeps no cached,
audio or batch tokens: those are 0, and ``batch`` is false."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import func, select

from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import InvalidRequest, NotFound
from gatehouse.store.db import Store
from gatehouse.store.rollups import RollupRows, plan
from gatehouse.store.tables import ApiKey, Project, UsageDaily, User
from gatehouse.telemetry.compaction import Retention
from gatehouse.telemetry.health_stage import json_reply, own_org

WIDTHS = {"1m": ("minute", 60), "1h": ("hour", 3600), "1d": ("day", 86400)}
# OpenAI's own: buckets per page by width, (default, maximum)
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
GROUPS = ("project_id", "user_id", "api_key_id", "model", "batch")
LISTS = {"project_ids": "project", "user_ids": "user_id", "api_key_ids": "key_id",
         "models": "model"}
NEEDS_HISTORY = ("user_id", "api_key_id")  # only the usage history holds these
MAX_PARAMS = 128
MAX_VALUES = 100
VALUE_MAX = 128
RESULT = "organization.usage.completions.result"
PATH = "/v1/organization/usage/completions"


@dataclass(slots=True)
class UsageQuery:
    start: int
    end: int | None = None
    width: str = "1d"
    limit: int = LIMITS["1d"][0]
    group_by: list[str] = field(default_factory=list)
    lists: dict[str, list[str]] = field(default_factory=dict)
    batch: bool | None = None
    page: int | None = None  # the first bucket's start of this page

    @property
    def history(self) -> bool:
        """Whether keys or users are asked about: then only the usage history answers."""
        return any(g in NEEDS_HISTORY for g in self.group_by) or bool(
            {"user_ids", "api_key_ids"} & self.lists.keys())


def _int(name: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 10:  # up to year 2286
        raise InvalidRequest(f"`{name}` must be a Unix time in seconds (a whole number, "
                             "at most 10 digits).", param=name)
    return int(value)


def parse_usage(raw: bytes) -> UsageQuery:
    """The query string, checked: every name known, values in range; a 400 naming the
    parameter otherwise."""
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=MAX_PARAMS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"The query string is not valid: give at most {MAX_PARAMS} "
                             "parameters, as UTF-8, percent-encoded.") from None
    single: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    group_by: list[str] = []
    for name, value in pairs:
        name = name.removesuffix("[]")
        if name in LISTS or name == "group_by":
            values = [v for v in value.split(",") if v] if value else []
            if not values or any(len(v) > VALUE_MAX or not v.isprintable() for v in values):
                raise InvalidRequest(f"`{name}` must name 1 to {VALUE_MAX} printable "
                                     "characters per value.", param=name)
            (group_by if name == "group_by" else lists.setdefault(name, [])).extend(values)
            if len(lists.get(name, group_by)) > MAX_VALUES:
                raise InvalidRequest(f"`{name}` takes at most {MAX_VALUES} values.", param=name)
        elif name in ("start_time", "end_time", "bucket_width", "limit", "page", "batch"):
            if name in single:
                raise InvalidRequest(f"`{name}` was given more than once; give it once.",
                                     param=name)
            single[name] = value
        else:
            raise InvalidRequest(f"Unknown parameter `{name}`.", param=name)
    if "start_time" not in single:
        raise InvalidRequest("`start_time` is required: the Unix time (seconds) the usage "
                             "starts at.", param="start_time")
    q = UsageQuery(_int("start_time", single["start_time"]))
    if "end_time" in single:
        q.end = _int("end_time", single["end_time"])
        if q.end <= q.start:
            raise InvalidRequest("`end_time` must be after `start_time`.", param="end_time")
    q.width = single.get("bucket_width", "1d")
    if q.width not in WIDTHS:
        raise InvalidRequest(f"Unknown bucket_width {q.width!r}: choose 1m, 1h or 1d.",
                             param="bucket_width")
    default, most = LIMITS[q.width]
    q.limit = default
    if "limit" in single:
        # leading zeros do not hide the size: "0000099" is 99, over 31 (a 7-digit prefix
        # already exceeds every maximum)
        digits = single["limit"].lstrip("0")
        if not single["limit"].isascii() or not single["limit"].isdigit() or not (
                1 <= int(digits[:7] or "0") <= most):
            raise InvalidRequest(f"`limit` must be 1 to {most} buckets for bucket_width="
                                 f"{q.width}.", param="limit")
        q.limit = int(single["limit"])
    for g in group_by:
        if g not in GROUPS:
            raise InvalidRequest(f"Unknown group_by {g!r}: choose from {', '.join(GROUPS)}.",
                                 param="group_by")
    q.group_by = list(dict.fromkeys(group_by))
    q.lists = {name: list(dict.fromkeys(v)) for name, v in lists.items()}
    if "batch" in single:
        if single["batch"] not in ("true", "false"):
            raise InvalidRequest("`batch` must be true or false.", param="batch")
        q.batch = single["batch"] == "true"
    if q.history and q.width != "1d":
        param = next((g for g in q.group_by if g in NEEDS_HISTORY), None) or next(
            n for n in ("api_key_ids", "user_ids") if n in q.lists)
        which = "group_by" if param in NEEDS_HISTORY else param
        raise InvalidRequest(f"Usage per API key or user is kept per UTC day: `{which}` "
                             f"({param}) needs bucket_width=1d.", param=which)
    if "page" in single:
        q.page = decode_page(single["page"], q)
    return q


def encode_page(start: int, q: UsageQuery) -> str:
    raw = f"{q.width}:{q.start}:{start}".encode()
    return "page_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page(cursor: str, q: UsageQuery) -> int:
    """The bucket a ``next_page`` cursor points at, for this same query."""
    bad = InvalidRequest("`page` is not a cursor this query returned: pass `next_page` "
                         "from the previous page, with the same start_time and bucket_width.",
                         param="page")
    if not cursor.startswith("page_") or len(cursor) > 80:
        raise bad
    body = cursor[5:]
    try:
        width, start, at = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode(
            ).split(":")
        first, page = int(start), int(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    size = WIDTHS[q.width][1]
    if width != q.width or first != q.start or page % size or page < q.start - q.start % size:
        raise bad
    return page


@dataclass(slots=True)
class Sums:
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0


async def check_ids(store: Store, q: UsageQuery, own_org: str | None) -> None:
    """Projects, keys and users named must exist — in the caller's org: another org's id is
    "not found", as one that does not exist."""
    tables: dict[str, tuple[Any, Any]] = {
        "project_ids": (Project.id, Project.org_id), "api_key_ids": (ApiKey.id, ApiKey.org_id),
        "user_ids": (User.id, User.org_id)}
    async with store.session() as s:
        for name, (id_col, org_col) in tables.items():
            wanted = q.lists.get(name)
            if not wanted:
                continue
            pick = select(id_col).where(id_col.in_(wanted))
            if own_org is not None:
                pick = pick.where(org_col == own_org)
            found = set((await s.scalars(pick)).all())
            for value in wanted:
                if value not in found:
                    raise NotFound(f"No {name.removesuffix('_ids').replace('_', ' ')} "
                                   f"`{value}` was found in your organization.", param=name)


def buckets(q: UsageQuery, now: float) -> tuple[list[int], bool]:
    """This page's bucket starts (Unix s) and whether more follow."""
    size = WIDTHS[q.width][1]
    first = q.start - q.start % size
    end = q.end if q.end is not None else int(now) + 1
    at = q.page if q.page is not None else first
    starts: list[int] = []
    while at < end and len(starts) < q.limit:
        starts.append(at)
        at += size
    return starts, at < end


async def _from_rollups(store: Store, q: UsageQuery, starts: list[int], own_org: str | None
                        ) -> list[tuple[int, tuple[Any, ...], Sums]]:
    grain, size = WIDTHS[q.width]
    since, until = starts[0] // 60, (starts[-1] + size) // 60
    filters: dict[str, str | Sequence[str]] = {}  # any component: a model's requests
    if own_org is not None:
        filters["org"] = own_org
    if "project_ids" in q.lists:
        filters["project"] = q.lists["project_ids"]
    if "models" in q.lists:
        filters["model"] = q.lists["models"]
    out = []
    for row in await RollupRows(store).read(plan(since, until, grain), filters):
        if row.model:
            key = tuple(row.project if g == "project_id" else row.model if g == "model"
                        else False for g in q.group_by)
            out.append((row.minute * 60 - row.minute * 60 % size, key,
                        Sums(row.prompt_tokens, row.completion_tokens,
                             row.requests if row.error_class == "ok" else 0)))
    return out


async def _from_history(store: Store, q: UsageQuery, starts: list[int], own_org: str | None
                        ) -> list[tuple[int, tuple[Any, ...], Sums]]:
    u = UsageDaily
    first, last = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
                   for t in (starts[0], starts[-1]))
    cols = {"project_id": u.project_id, "user_id": u.user_id, "api_key_id": u.key_id,
            "model": u.model}
    keys = [cols[g] for g in q.group_by if g in cols]
    query = (select(u.day, *keys, func.sum(u.prompt_tokens), func.sum(u.completion_tokens),
                    func.sum(u.requests))
             .where(u.day >= first, u.day <= last, u.model != "").group_by(u.day, *keys))
    if own_org is not None:
        query = query.where(u.org_id == own_org)
    for name, column in (("project_ids", u.project_id), ("user_ids", u.user_id),
                         ("api_key_ids", u.key_id), ("models", u.model)):
        if name in q.lists:
            query = query.where(column.in_(q.lists[name]))
    async with store.session() as s:
        rows = (await s.execute(query)).all()
    out = []
    for day, *rest in rows:
        values = iter(rest[:len(keys)])
        key = tuple(False if g == "batch" else next(values) for g in q.group_by)
        at = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
        out.append((at, key, Sums(*(int(v or 0) for v in rest[len(keys):]))))
    return out


def check_kept(q: UsageQuery, starts: list[int], now: float, retention: Retention) -> None:
    """Buckets older than their grain is kept would be empty, not zero: refused."""
    grain = "day" if q.history else WIDTHS[q.width][0]
    if q.history or not starts:
        return  # the usage history is kept for good
    kept = retention.minutes(grain) * 60
    if starts[0] < now - kept:
        raise InvalidRequest(f"Usage per {grain} is kept {kept / 86400:g} days: start "
                             f"at {int(now) - kept} or later, or take a wider bucket_width.",
                             param="start_time")


async def read_usage(store: Store, q: UsageQuery, *, own_org: str | None = None,
                     retention: Retention | None = None, now: float | None = None
                     ) -> dict[str, Any]:
    """The page for ``q``: ``own_org`` (a customer's org id) scopes everything to it."""
    now = time.time() if now is None else now
    starts, more = buckets(q, now)
    check_kept(q, starts, now, retention or Retention())
    await check_ids(store, q, own_org)
    size = WIDTHS[q.width][1]
    sums: dict[int, dict[tuple[Any, ...], Sums]] = {t: {} for t in starts}
    if starts and q.batch is not True:  # the gateway runs no batch jobs
        source = _from_history if q.history else _from_rollups
        for at, key, part in await source(store, q, starts, own_org):
            if at not in sums:
                continue
            into = sums[at].setdefault(key, Sums())
            into.input_tokens += part.input_tokens
            into.output_tokens += part.output_tokens
            into.requests += part.requests
    return {
        "object": "page",
        "data": [{"object": "bucket", "start_time": at, "end_time": at + size,
                  "results": [result(q.group_by, key, s) for key, s in sorted(
                      sums[at].items(), key=lambda kv: str(kv[0])) if s.requests
                      or s.input_tokens or s.output_tokens]} for at in starts],
        "has_more": more,
        "next_page": encode_page(starts[-1] + size, q) if more else None,
    }


def result(group_by: list[str], key: tuple[Any, ...], s: Sums) -> dict[str, Any]:
    named = dict(zip(group_by, key, strict=True))
    return {"object": RESULT, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "input_cached_tokens": 0, "input_audio_tokens": 0, "output_audio_tokens": 0,
            "num_model_requests": s.requests,
            **{g: named.get(g) or None for g in ("project_id", "user_id", "api_key_id",
                                                 "model")},
            "batch": named.get("batch")}


class CompletionsUsageStage:
    """``GET /v1/organization/usage/completions`` for the caller's own org."""

    name = "usage_report"

    def __init__(self, store: Store, retention: Retention) -> None:
        self.store = store
        self.retention = retention

    async def enter(self, ctx: RequestContext) -> None:
        query = parse_usage(ctx.query)
        ctx.reply = json_reply(await read_usage(self.store, query, own_org=own_org(ctx, "Usage"),
                                                retention=self.retention))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None
