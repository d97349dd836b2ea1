"""``gatehouse rules | bans | rays``: the edge's firewall rules, bans and Ray IDs.

Straight on the store and the state layer named in the config; changes are announced to
running replicas exactly as the admin API announces them."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gatehouse.cli.accounts import _run, parse_duration, when
from gatehouse.cli.common import JsonOpt, Listing, at_most
from gatehouse.cli.options import ConfigOpt
from gatehouse.edge.bans import BAN_MAX, REASON_MAX, Bans
from gatehouse.edge.rays import RAY_PATTERN
from gatehouse.edge.rulebook import RuleAdmin
from gatehouse.edge.rules import NOTE_MAX, RULE_NAME_MAX, RuleError
from gatehouse.identity.service import IdentityService
from gatehouse.state.local import UnsharedState
from gatehouse.store.accounts import ID_MAX, AccountError
from gatehouse.store.edge import EdgeRecords

out = Console()
err = Console(stderr=True)
rules = typer.Typer(help="Firewall rules: allow, deny or challenge by address, list file, "
                         "user agent, path, country or ASN (first match wins).",
                    no_args_is_help=True)
bans = typer.Typer(help="Timed bans of addresses and networks (shared by every replica).",
                   no_args_is_help=True)
rays = typer.Typer(help="Look up what the edge did for a Ray ID.", no_args_is_help=True)
Opt = typer.Option


def _admin(ids: IdentityService) -> RuleAdmin:
    return RuleAdmin(ids.settings.edge, EdgeRecords(ids.store), ids.state, ids.settings.base_dir)


def _spec(rule: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in rule.items() if k != "action")


@rules.command("list")
def rules_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every rule in the order they are tried: gatehouse.toml's, then the stored ones."""
    async def act(ids: IdentityService) -> None:
        listing = Listing("#", "id", "source", "action", "conditions", "note")
        for i, row in enumerate(await _admin(ids).listing()):
            listing.add(i, row["id"], row["source"], row["rule"]["action"],
                        _spec(row["rule"]), row["note"])
        listing.print(as_json)
    _run(config, act, reads=True)


@rules.command("add")
def rules_add(
    action: Annotated[str, typer.Argument(help="allow | deny | challenge")],
    cidr: Annotated[list[str] | None, Opt(help="Address or CIDR (repeatable).")] = None,
    list_file: Annotated[str | None, Opt("--list", help="File of CIDRs, one a line.")] = None,
    user_agent: Annotated[str | None, Opt(help="Regex (RE2 syntax) searched in User-Agent.")] = None,
    path: Annotated[str | None, Opt(help="Regex (RE2 syntax) searched in the path.")] = None,
    country: Annotated[list[str] | None, Opt(help="ISO country code (repeatable).")] = None,
    asn: Annotated[list[int] | None, Opt(help="AS number (repeatable).")] = None,
    difficulty: Annotated[int | None, Opt(help="Challenge rules: leading zero bits.")] = None,
    name: Annotated[str | None, Opt(help="Name for metrics and Ray events.",
                                    callback=at_most(RULE_NAME_MAX, "a rule's name"))] = None,
    note: Annotated[str, Opt(help="Why (shown in lists).",
                             callback=at_most(NOTE_MAX, "a rule's note"))] = "",
    position: Annotated[int | None, Opt(help="Place among the stored rules (0: first).")]
    = None,
    config: ConfigOpt = None,
) -> None:
    """Add a rule; every replica applies it within a moment."""
    spec = {"action": action, "name": name, "cidr": cidr or None, "list": list_file,
            "user_agent": user_agent, "path": path, "country": country or None,
            "asn": asn or None, "difficulty": difficulty}

    async def act(ids: IdentityService) -> None:
        try:
            row = await _admin(ids).add(spec, note, position)
        except RuleError as exc:
            raise AccountError("invalid", str(exc)) from None
        out.print(f"added rule {row['id']} at position {row['position']}: {action} "
                  f"{_spec(row['rule'])}", markup=False)  # a regex's brackets are no markup
    _run(config, act)


@rules.command("remove")
def rules_remove(rule_id: Annotated[str, typer.Argument(callback=at_most(ID_MAX, "a rule id"))], config: ConfigOpt = None) -> None:
    """Remove a stored rule (rules in gatehouse.toml are changed there)."""
    async def act(ids: IdentityService) -> None:
        if not await _admin(ids).remove(rule_id):
            raise AccountError("not_found", f"no stored rule {rule_id!r}")
        out.print(f"removed rule {rule_id}", markup=False)
    _run(config, act)


@bans.command("list")
def bans_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Bans in force."""
    async def act(ids: IdentityService) -> None:
        listing = Listing("subject", "until", "reason", "strikes", times=("until",))
        for ban in await Bans(ids.state, ids.settings.edge.detector).list():
            listing.add(ban.subject, ban.until, ban.reason, ban.strikes)
        listing.print(as_json)
        if isinstance(ids.state, UnsharedState):
            err.print(f"(no running gatehouse answered at {ids.state.path}: with state_url = "
                      "memory:// the bans live inside it)", markup=False)
    _run(config, act, reads=True)


@bans.command("add")
def bans_add(subject: Annotated[str, typer.Argument(help="Address or CIDR.")],
             duration: Annotated[str, Opt("--for", help="How long: 90s, 15m, 12h, 7d.")] = "1h",
             reason: Annotated[str, Opt(help="Why (logged, listed).", callback=at_most(
                 REASON_MAX, "a ban's reason"))] = "banned by an administrator",
             config: ConfigOpt = None) -> None:
    """Ban an address or a network on every replica."""
    seconds = parse_duration(duration, BAN_MAX)

    async def act(ids: IdentityService) -> None:
        try:
            ban = await Bans(ids.state, ids.settings.edge.detector).ban(subject, reason, seconds)
        except RuleError as exc:
            raise AccountError("invalid", str(exc)) from None
        out.print(f"banned {ban.subject} until {when(ban.until)}: {ban.reason}", markup=False)
    _run(config, act, live=True)


@bans.command("remove")
def bans_remove(subject: str, config: ConfigOpt = None) -> None:
    """Lift a ban (and forget earlier ones, so the next starts short again)."""
    async def act(ids: IdentityService) -> None:
        try:
            lifted = await Bans(ids.state, ids.settings.edge.detector).unban(subject)
        except RuleError as exc:
            raise AccountError("invalid", str(exc)) from None
        if not lifted:
            raise AccountError("not_found", f"{subject} is not banned")
        out.print(f"lifted the ban of {subject}", markup=False)
    _run(config, act, live=True)


@rays.command("show")
def rays_show(ray: str, config: ConfigOpt = None) -> None:
    """What happened to the request with this Ray ID: when, who, which rule, why."""
    ray = ray.strip().lower()
    if not re.fullmatch(RAY_PATTERN, ray):
        raise typer.BadParameter("a Ray ID is 16 hexadecimal digits")

    async def act(ids: IdentityService) -> None:
        found = await EdgeRecords(ids.store).ray(ray)
        if found is None:
            raise AccountError("not_found", f"no Ray ID {ray} (events reach the store within "
                               "a second or two, and are kept "
                               f"{ids.settings.edge.rays_keep_days:g} days)")
        table = Table("field", "value", show_header=False)
        for key, value in found.items():
            table.add_row(key, when(value) if key == "at" else str(value))
        out.print(table)
    _run(config, act, reads=True)
