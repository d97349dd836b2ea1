"""``gatehouse usage | limits``: what an org used, and per-scope limit overrides."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gatehouse.cli.accounts import _run, parse_duration
from gatehouse.cli.common import JsonOpt, Listing
from gatehouse.cli.options import ConfigOpt
from gatehouse.identity.principal import Principal
from gatehouse.identity.service import IdentityService
from gatehouse.quota.limiter import LimiterError
from gatehouse.quota.overrides import Overrides, announce
from gatehouse.quota.policy import LIMITS, Estimate, charges
from gatehouse.quota.windows import format_reset
from gatehouse.store.accounts import AccountError
from gatehouse.store.usage import GROUPS, UsageBook

out = Console()
limits = typer.Typer(help="Limit overrides for one org, project, key or user.",
                     no_args_is_help=True)


def usage(
    org: str,
    by: Annotated[str, typer.Option(help=f"Group by any of: {', '.join(GROUPS)}.")] = "",
    since: Annotated[str, typer.Option(help="How far back, e.g. 7d, 24h.")] = "7d",
    config: ConfigOpt = None,
) -> None:
    """What an org used (requests and tokens) since a time, and its current windows."""
    groups = [g.strip() for g in by.split(",") if g.strip()]
    for g in groups:
        if g not in GROUPS:
            raise typer.BadParameter(f"--by {g!r}: choose from {', '.join(GROUPS)}")
    start = time.time() - parse_duration(since)

    async def act(ids: IdentityService) -> None:
        the_org = await ids.accounts.org(org)
        rows = await UsageBook(ids.store).report(the_org.id, groups, start)
        table = Table(*groups, "requests", "prompt tokens", "completion tokens", "total",
                      title=f"{org}: usage since {since} ago")
        for row in rows:
            table.add_row(*(str(row[g] or "—") for g in groups),
                          *(f"{int(row[k]):,}" for k in ("requests", "prompt_tokens",  # type: ignore[call-overload]
                                                          "completion_tokens", "total_tokens")))
        out.print(table)
        await _windows(ids, the_org.id, the_org.name, the_org.tier)

    _run(config, act, reads=True)


async def _windows(ids: IdentityService, org_id: str, name: str, tier_name: str) -> None:
    from gatehouse.app import open_limiter

    tier = ids.settings.tiers.get(tier_name)
    overrides = await Overrides(ids.store).load()
    principal = Principal("key", tier_name, org_id=org_id, org=name)
    now = time.time()
    plan = [c for c in charges(principal, tier, None, ids.settings.quota, Estimate(0, 0), now,
                               overrides) if c.scope == "org"]
    if not plan:
        out.print(f"no org-wide limits for {name} (tier {tier_name})")
        return
    limiter = open_limiter(ids.settings.storage.state_url, ids.settings.quota.limiter_timeout)
    try:
        used = await limiter.usage([c.ask for c in plan], now)
    except LimiterError as exc:
        out.print(f"current windows unavailable: {exc}")
        return
    finally:
        await limiter.aclose()
    table = Table("limit", "used", "remaining", "resets in",
                  title=f"{name}: org-wide limits now (tier {tier_name})")
    for charge, value in zip(plan, used, strict=True):
        table.add_row(charge.label, f"{value:,}", f"{max(0, charge.ask.limit - value):,}",
                      format_reset(charge.window_end - now) if LIMITS[charge.field][0] else "—")
    out.print(table)
    if ids.settings.storage.state_url.startswith("memory://"):
        out.print("(state_url is memory://: the running gateway's counters are not visible "
                  "from here)")


@limits.command("set")
def limits_set(scope: Annotated[str, typer.Argument(help="org | project | key | user")],
               name: Annotated[str, typer.Argument(help="acme | acme/bot | key_… | email")],
               field: Annotated[str, typer.Argument(help=", ".join(LIMITS))],
               value: Annotated[str, typer.Argument(help="a number, or 'unlimited'")],
               config: ConfigOpt = None) -> None:
    """Give one scope its own value for a limit (replaces the tier's)."""
    number: int | None = None
    if value != "unlimited":
        try:
            number = int(value.replace("_", "").replace(",", ""))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number or 'unlimited'") from None

    async def act(ids: IdentityService) -> None:
        scope_id = await ids.accounts.scope_id(scope, name)
        try:
            await Overrides(ids.store).set(scope, scope_id, field, number)
        except ValueError as exc:
            raise AccountError("invalid", str(exc)) from None
        await announce(ids.state)
        out.print(f"{scope} {name}: {field} = {value}")
    _run(config, act)


@limits.command("clear")
def limits_clear(scope: str, name: str,
                 field: Annotated[str | None, typer.Argument()] = None,
                 config: ConfigOpt = None) -> None:
    """Drop one scope's overrides (one limit, or all): the tier's values apply again."""
    async def act(ids: IdentityService) -> None:
        scope_id = await ids.accounts.scope_id(scope, name)
        n = await Overrides(ids.store).clear(scope, scope_id, field)
        await announce(ids.state)
        out.print(f"cleared {n} override(s) of {scope} {name}")
    _run(config, act)


@limits.command("list")
def limits_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List every override (a value of none — "unlimited" in the table — lifts the limit)."""
    async def act(ids: IdentityService) -> None:
        listing = Listing("scope", "id", "limit", "value", blanks={"value": "unlimited"})
        for (scope, scope_id), values in sorted((await Overrides(ids.store).load()).items()):
            for field, value in sorted(values.items()):
                listing.add(scope, scope_id, field, value)
        listing.print(as_json)
    _run(config, act, reads=True)
