"""``gatehouse orgs | projects | keys | users | tiers``: accounts, straight on the store.

Changes that must reach running replicas at once (a revoked key, a new tier) are announced
through the state layer named in the config, exactly as the admin API does."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from gatehouse.cli.common import JsonOpt, Listing, at_most, load_for_cli, store_errors
from gatehouse.cli.options import ConfigOpt
from gatehouse.config import Settings
from gatehouse.identity.service import (
    IdentityService,
    missing_sqlite_file,
    resolve_paths,
)
from gatehouse.state import State, StateError
from gatehouse.state.local import SocketState, UnsharedState, socket_path
from gatehouse.store.accounts import (
    EMAIL_MAX,
    GRACE_MAX,
    ID_MAX,
    KEY_LIFETIME_MAX,
    KEY_NAME_MAX,
    NAME_MAX,
    AccountError,
)
from gatehouse.timestamps import minute

out = Console()
err = Console(stderr=True)
T = TypeVar("T")
# arguments bounded as the store and the admin API bound them (never echoed whole)
OrgName = Annotated[str, typer.Argument(callback=at_most(NAME_MAX, "an org name"))]
ProjectRef = Annotated[str, typer.Argument(metavar="ORG/PROJECT", callback=at_most(
    2 * NAME_MAX + 1, "ORG/PROJECT"))]
KeyId = Annotated[str, typer.Argument(callback=at_most(ID_MAX, "a key id"))]
Email = Annotated[str, typer.Argument(callback=at_most(EMAIL_MAX, "an email address"))]

orgs = typer.Typer(help="Organisations: the top of the account tree; each has a tier.",
                   no_args_is_help=True)
projects = typer.Typer(help="Projects inside an org (ORG/PROJECT); keys belong to a project.",
                       no_args_is_help=True)
keys = typer.Typer(help="API keys: create (shown once), list, revoke, rotate.",
                   no_args_is_help=True)
users = typer.Typer(help="People who sign in to the web path.", no_args_is_help=True)
tiers = typer.Typer(help="Tiers defined in gatehouse.toml.", no_args_is_help=True)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, maximum: float = KEY_LIFETIME_MAX) -> float:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w``, or combinations like ``1h30m``: more than
    0 and at most ``maximum`` seconds (an endless one once made a key whose expiry no
    listing could print)."""
    parts = _DURATION.findall(text.strip().lower())
    if not parts or "".join(a + b for a, b in parts) != text.strip().lower():
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 12h, 30d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds <= maximum:
        raise typer.BadParameter(f"{text!r} is not more than 0s and at most "
                                 f"{maximum / 86400:g} days")
    return seconds


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return minute(ts)


def _run(config: Any, action: Callable[[IdentityService], Awaitable[T]], *,
         live: bool = False, reads: bool = False) -> T:
    """Run ``action`` on the store and the state layer. On ``memory://`` the state is the
    running gateway's, reached through its socket (gatehouse/state/local.py); when none is
    running, say so — and fail when the change (``live``: a ban, a sign-out) exists only in
    a running gateway. A command that only ``reads`` makes nothing: on a store that does not
    exist yet it says so (it made the SQLite file, its folders and the secret file)."""
    settings = load_for_cli(config)
    if reads and (absent := absent_store(settings)) is not None:
        err.print(Text.assemble(("error ", "bold red"), f"there is no store at {absent} yet: "
                                "`gatehouse init` makes it (and the first keys; an existing "
                                "gatehouse.toml is kept), `gatehouse migrate` makes the store "
                                "alone"), soft_wrap=True)
        raise typer.Exit(1)
    unshared: UnsharedState | None = None

    async def go() -> T:
        nonlocal unshared
        state: State | None = None
        if settings.storage.state_url.startswith("memory://"):
            path = socket_path(resolve_paths(settings)[1])
            state = await SocketState.connect(path)
            if state is None:
                if live:  # nothing to do it on: say so before pretending anything
                    not_reached(path, live)
                state = unshared = UnsharedState(path)
        identity = IdentityService(settings, state=state)
        try:
            await identity.start(serve=False)
            return await action(identity)
        finally:
            await identity.aclose()

    try:
        with store_errors(settings):
            result = asyncio.run(go())
    except AccountError as exc:  # the words as written: "[/x]" is a name, not Rich markup
        err.print(Text.assemble(("error ", "bold red"), exc.message), soft_wrap=True)
        raise typer.Exit(1) from None
    except StateError as exc:
        err.print(Text.assemble(("error ", "bold red"), f"the state layer failed: {exc}"),
                  soft_wrap=True)
        raise typer.Exit(1) from None
    if unshared is not None and unshared.changed:
        not_reached(unshared.path, live)
    return result


def absent_store(settings: Settings) -> str | None:
    """The SQLite file the settings name when it does not exist (None: it does, or the store
    is PostgreSQL, whose database is made by its administrator)."""
    return missing_sqlite_file(resolve_paths(settings)[0])


def not_reached(path: str, live: bool) -> None:
    """No running gateway was told of a change: say what that means, plainly."""
    if live:
        err.print(f"not applied: no running gatehouse answered at {path}, and with "
                  "state_url = memory:// bans and sessions exist only inside a running "
                  "gateway. Start it (gatehouse serve) and run this again, or use Redis "
                  "(docs/deployment.md).", soft_wrap=True, markup=False)
        raise typer.Exit(1)
    err.print(f"note: no running gatehouse answered at {path}; the change is saved in the "
              "store and applies when a gateway starts.", soft_wrap=True, markup=False)


def _tier(settings: Settings, tier: str | None, kind: str) -> str | None:
    if tier is not None and (problem := settings.tier_problem(tier, kind)):
        raise AccountError("invalid", f"{problem} (see `gatehouse tiers list`)")
    return tier


# -- orgs ---------------------------------------------------------------------------------
@orgs.command("create")
def orgs_create(name: OrgName, tier: Annotated[str, typer.Option(help="API tier.")] = "standard",
                config: ConfigOpt = None) -> None:
    """Create an org."""
    async def act(ids: IdentityService) -> None:
        org = await ids.accounts.create_org(name, _tier(ids.settings, tier, "api") or tier)
        out.print(f"created org [bold]{org.name}[/] ({org.id}), tier {org.tier}")
    _run(config, act)


@orgs.command("list")
def orgs_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List orgs."""
    async def act(ids: IdentityService) -> None:
        listing = Listing("name", "id", "tier", "created", times=("created",))
        for org in await ids.accounts.orgs():
            listing.add(org.name, org.id, org.tier, org.created_at)
        listing.print(as_json)
    _run(config, act, reads=True)


@orgs.command("set-tier")
def orgs_set_tier(name: OrgName, tier: str, config: ConfigOpt = None) -> None:
    """Change an org's tier (keys without their own tier follow it)."""
    async def act(ids: IdentityService) -> None:
        await ids.accounts.set_org_tier(name, _tier(ids.settings, tier, "api") or tier)
        await ids.key_changed(None)
        out.print(f"org [bold]{name}[/] is now on tier {tier}")
    _run(config, act)


# -- projects -----------------------------------------------------------------------------
@projects.command("create")
def projects_create(ref: ProjectRef,
                    config: ConfigOpt = None) -> None:
    """Create a project in an org."""
    async def act(ids: IdentityService) -> None:
        _, project = await ids.accounts.create_project(ref)
        out.print(f"created project [bold]{ref}[/] ({project.id})")
    _run(config, act)


@projects.command("list")
def projects_list(org: Annotated[str | None, typer.Argument()] = None,
                  config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List projects (of one org, or all)."""
    async def act(ids: IdentityService) -> None:
        listing = Listing("project", "id", "created", times=("created",))
        for org_name, project in await ids.accounts.projects(org):
            listing.add(f"{org_name}/{project.name}", project.id, project.created_at)
        listing.print(as_json)
    _run(config, act, reads=True)


# -- keys ---------------------------------------------------------------------------------
@keys.command("create")
def keys_create(
    ref: Annotated[str | None, typer.Argument(metavar="ORG/PROJECT", callback=at_most(
        2 * NAME_MAX + 1, "ORG/PROJECT"))] = None,
    tier: Annotated[str | None, typer.Option(help="Override the org's tier.")] = None,
    name: Annotated[str, typer.Option(help="A label to tell keys apart.", callback=at_most(
        KEY_NAME_MAX, "a key's name"))] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d or 12h.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin-API key (no project).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a key and print it — the only time it is shown."""
    expires_at = time.time() + parse_duration(expires) if expires else None

    async def act(ids: IdentityService) -> None:
        plain, row = await ids.accounts.create_key(
            None if admin else ref, scope="admin" if admin else "api",
            tier=_tier(ids.settings, tier, "api"), name=name, expires_at=expires_at)
        err.print(f"created {'admin ' if admin else ''}key {row.id} for "
                  f"{'the admin API' if admin else ref}; it is shown once, store it now:")
        typer.echo(plain)
    if admin and ref:
        raise typer.BadParameter("an admin key belongs to no project; drop ORG/PROJECT")
    _run(config, act)


@keys.command("list")
def keys_list(
    ref: Annotated[str | None, typer.Argument(metavar="[ORG | ORG/PROJECT]")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="List admin keys.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys: id, prefix, project, tier, created, last used — never the secret. The id
    is what ``revoke`` and ``rotate`` take."""
    async def act(ids: IdentityService) -> None:
        project = ref if ref and "/" in ref else None
        org = ref if ref and "/" not in ref else None
        listing = Listing("id", "key", "project", "tier", "name", "created", "last used",
                          "expires", "status", times=("created", "last used", "expires"),
                          blanks={"project": "(admin)", "tier": "(org's)"})
        now = time.time()
        for k in await ids.accounts.key_infos(org, project, "admin" if admin else None):
            listing.add(k.id, k.display, k.project, k.tier, k.name, k.created_at,
                        k.last_used_at, k.expires_at, k.status(now))
        listing.print(as_json)
    _run(config, act, reads=True)


@keys.command("revoke")
def keys_revoke(key_id: KeyId, config: ConfigOpt = None) -> None:
    """Revoke a key on every replica (within a second when the state layer is shared)."""
    async def act(ids: IdentityService) -> None:
        row = await ids.accounts.revoke_key(key_id)
        await ids.key_changed(row.hash)
        out.print(f"revoked {row.id} ({row.display})")
    _run(config, act)


@keys.command("rotate")
def keys_rotate(key_id: KeyId,
                grace: Annotated[str | None, typer.Option(
                    help="Keep the old key working this long, e.g. 1h.")] = None,
                config: ConfigOpt = None) -> None:
    """Make a new key like this one and retire the old one (now, or after --grace)."""
    seconds = parse_duration(grace, GRACE_MAX) if grace else 0.0

    async def act(ids: IdentityService) -> None:
        plain, new, old = await ids.accounts.rotate_key(key_id, seconds)
        await ids.key_changed(old.hash)
        ends = f"stops at {when(old.expires_at)}" if seconds else "is revoked"
        err.print(f"new key {new.id}; the old key {old.id} {ends}. Shown once, store it now:")
        typer.echo(plain)
    _run(config, act)


# -- users --------------------------------------------------------------------------------
@users.command("create")
def users_create(
    email: Email,
    org: Annotated[str | None, typer.Option(help="The user's org.", callback=at_most(
        NAME_MAX, "an org name"))] = None,
    tier: Annotated[str, typer.Option(help="Web tier.")] = "free",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a user who can sign in to the web path."""
    # argon2 is loaded for this command only
    from gatehouse.identity.passwords import hash_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else \
        typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        err.print(Text.assemble(("error ", "bold red"), str(exc)), soft_wrap=True)
        raise typer.Exit(1) from None

    async def act(ids: IdentityService) -> None:
        user = await ids.accounts.create_user(email, hashed, org,
                                              _tier(ids.settings, tier, "web") or tier)
        out.print(f"created user [bold]{user.email}[/] ({user.id}), tier {user.tier}")
    _run(config, act)


@users.command("list")
def users_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List users."""
    async def act(ids: IdentityService) -> None:
        listing = Listing("email", "id", "org", "tier", "created", "status",
                          times=("created",))
        for user in await ids.accounts.users():
            listing.add(user.email, user.id, user.org, user.tier, user.created_at,
                        "disabled" if user.disabled else "active")
        listing.print(as_json)
    _run(config, act, reads=True)


@users.command("set-tier")
def users_set_tier(email: Email, tier: str, config: ConfigOpt = None) -> None:
    """Change a user's web tier."""
    async def act(ids: IdentityService) -> None:
        await ids.accounts.update_user(email, tier=_tier(ids.settings, tier, "web"))
        out.print(f"{email} is now on tier {tier}")
    _run(config, act)


@users.command("disable")
def users_disable(email: Email, config: ConfigOpt = None) -> None:
    """Stop a user signing in, and end their sessions."""
    async def act(ids: IdentityService) -> None:
        user = await ids.accounts.update_user(email, disabled=True)
        ended = await ids.sessions.end_all(user.id, "account_disabled")
        out.print(f"disabled {email}; ended {ended} session(s)")
    _run(config, act)


@users.command("unlock")
def users_unlock(
        email: Email,
        address: Annotated[str | None, typer.Option(
            help="Also forget the failed sign-ins from this IP address (IPv6: its /64).")] = None,
        config: ConfigOpt = None) -> None:
    """Lift a sign-in lock: forget the failed sign-ins of an email (and of an address)."""
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address.strip()))
        except ValueError:
            raise typer.BadParameter(f"{address!r} is not an IP address",
                                     param_hint="--address") from None

    async def act(ids: IdentityService) -> None:
        cleared = await ids.throttle.unlock(email, address)
        what = email if address is None else f"{email} and {address}"
        out.print(f"forgot the failed sign-ins of {what}" if cleared else
                  f"no failed sign-ins were counted for {what}")
    _run(config, act, live=True)


@users.command("logout")
def users_logout(email: Email, config: ConfigOpt = None) -> None:
    """Sign a user out everywhere."""
    async def act(ids: IdentityService) -> None:
        user = await ids.accounts.user_by_email(email)
        if user is None:
            raise AccountError("not_found", f"no user {email!r}")
        ended = await ids.sessions.end_all(user.id, "signed_out_by_admin")
        out.print(f"ended {ended} session(s) of {email}")
    _run(config, act, live=True)


# -- tiers --------------------------------------------------------------------------------
@tiers.command("list")
def tiers_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List tiers: their kind, what they may request with service_tier, description."""
    settings = load_for_cli(config)
    listing = Listing("tier", "kind", "may request", "description")
    for name, tier in settings.tiers.items():
        listing.add(name, tier.kind, list(tier.may_request), tier.description)
    listing.print(as_json)
