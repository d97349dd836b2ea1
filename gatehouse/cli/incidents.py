"""``gatehouse incidents …``: the status page's incidents and maintenance, straight on the
store — every running gateway shows a change within ``[status] snapshot_seconds``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from gatehouse.cli.accounts import _run, parse_duration, when
from gatehouse.cli.common import JsonOpt, Listing
from gatehouse.cli.options import ConfigOpt
from gatehouse.identity.service import IdentityService
from gatehouse.status.components import components_of
from gatehouse.status.incidents import IncidentError, Incidents, maintenance_status
from gatehouse.store.status import Incident, StatusRecords

out = Console()
err = Console(stderr=True)
incidents = typer.Typer(help="The status page's incidents and scheduled maintenance.",
                        no_args_is_help=True)
Opt = typer.Option
Body = Annotated[str, Opt("--body", "-b", help="What to tell people (the update's text).")]
Components = Annotated[list[str] | None, Opt(
    "--component", help="KEY=STATE (repeatable), e.g. api=partial_outage; states: "
    "operational, degraded_performance, partial_outage, major_outage, under_maintenance.")]


def _book(ids: IdentityService) -> Incidents:
    return Incidents(StatusRecords(ids.store), components_of(ids.settings))


def _states(pairs: list[str] | None) -> dict[str, str]:
    found = {}
    for pair in pairs or []:
        key, sep, state = pair.partition("=")
        if not sep or not key or not state:
            raise typer.BadParameter(f"{pair!r} is not KEY=STATE", param_hint="--component")
        found[key] = state
    return found


def _as_json(i: Incident) -> dict[str, Any]:
    r = i.row
    return {"id": r.id, "kind": r.kind, "name": r.name, "status": r.status,
            "impact": r.impact, "automatic": r.automatic,
            "acknowledged_at": r.acknowledged_at, "created_at": r.created_at,
            "resolved_at": r.resolved_at, "components": i.components, "figures": i.figures,
            "postmortem": r.postmortem, "postmortem_published_at": r.postmortem_at,
            "updates": [{"status": u.status, "body": u.body, "created_at": u.created_at,
                         "affected_components": json.loads(u.affected)} for u in i.updates]}


def _do(config: Path | None, action: Any, *, reads: bool = False) -> Any:
    """Run ``action(book)``; an IncidentError is printed and exits 1. ``reads``: only reads
    (makes no store where there is none)."""
    async def act(ids: IdentityService) -> Any:
        try:
            return await action(_book(ids))
        except IncidentError as exc:
            err.print(Text.assemble(("error ", "red"), exc.message), highlight=False)
            raise typer.Exit(1) from None
    return _run(config, act, reads=reads)


def _said(i: Incident, what: str) -> None:
    out.print(f"{what} {i.row.kind} {i.row.id}: {i.row.name} ({i.row.status}, impact "
              f"{i.row.impact}); on the status page within seconds", markup=False,
              highlight=False)


@incidents.command("list")
def list_incidents(
    live: Annotated[bool, Opt(help="Only those not resolved.")] = False,
    maintenance: Annotated[bool, Opt(help="Scheduled maintenance instead.")] = False,
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Incidents, newest first (automatic ones awaiting acknowledgement are marked)."""
    async def act(book: Incidents) -> None:
        kind = "maintenance" if maintenance else "incident"
        found = await book.records.listing(kind=kind, live_only=live)
        if as_json:
            typer.echo(json.dumps([_as_json(i) for i in found], indent=2, ensure_ascii=False))
            return
        listing = Listing("id", "name", "status", "impact", "by", "started", "resolved",
                          times=("started", "resolved"))
        for i in found:
            r = i.row
            status = maintenance_status(r, time.time()) if r.kind == "maintenance" else \
                r.status
            by = "operator" if not r.automatic else \
                "detector (acknowledged)" if r.acknowledged_at else "detector (NOT ACKED)"
            listing.add(r.id, r.name, status, r.impact, by, r.started_at, r.resolved_at)
        listing.print(False)
    _do(config, act, reads=True)


@incidents.command("show")
def show(incident_id: str, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """One incident with its updates, figures and postmortem (draft or published)."""
    async def act(book: Incidents) -> None:
        found = await book.records.get(incident_id)
        if found is None:
            raise IncidentError("not_found", f"No incident {incident_id!r}.")
        if as_json:
            typer.echo(json.dumps(_as_json(found), indent=2, ensure_ascii=False))
            return
        r = found.row
        out.print(f"{r.name} [{r.status}, impact {r.impact}]", markup=False, highlight=False)
        for u in reversed(found.updates):
            out.print(f"  {when(u.created_at)}  {u.status}: {u.body}", markup=False,
                      highlight=False)
        if r.postmortem:
            title = "Postmortem" if r.postmortem_at else "Postmortem (draft, not published)"
            out.print(f"\n{title}\n{r.postmortem}", markup=False, highlight=False)
    _do(config, act, reads=True)


@incidents.command("open")
def open_(
    name: Annotated[str, typer.Argument(help="The title, e.g. 'Elevated errors on the API'.")],
    body: Body,
    status: Annotated[str, Opt(help="investigating | identified | monitoring")]
    = "investigating",
    impact: Annotated[str | None, Opt(help="none | minor | major | critical (default: from "
                                           "the components' states)")] = None,
    component: Components = None, config: ConfigOpt = None,
) -> None:
    """Open an incident by hand."""
    states = _states(component)

    async def act(book: Incidents) -> None:
        _said(await book.open(name, body, status=status, impact=impact, components=states),
              "opened")
    _do(config, act)


@incidents.command("update")
def update(
    incident_id: str, body: Body,
    status: Annotated[str | None, Opt(help="investigating | identified | monitoring | "
                                           "resolved")] = None,
    impact: Annotated[str | None, Opt(help="none | minor | major | critical")] = None,
    component: Components = None, config: ConfigOpt = None,
) -> None:
    """Post an update (and move its status or its components' states)."""
    states = _states(component)

    async def act(book: Incidents) -> None:
        _said(await book.update(incident_id, body, status=status, impact=impact,
                                components=states), "updated")
    _do(config, act)


@incidents.command("resolve")
def resolve(incident_id: str,
            body: Annotated[str | None, Opt("--body", "-b")] = None,
            config: ConfigOpt = None) -> None:
    """Resolve it: its components go back to operational and a postmortem is drafted."""
    async def act(book: Incidents) -> None:
        _said(await book.resolve(incident_id, body), "resolved")
        out.print(f"postmortem drafted: gatehouse incidents postmortem {incident_id}",
                  markup=False, highlight=False)
    _do(config, act)


@incidents.command("ack")
def ack(incident_id: str, config: ConfigOpt = None) -> None:
    """Acknowledge an automatic incident: an operator has seen it."""
    async def act(book: Incidents) -> None:
        _said(await book.acknowledge(incident_id), "acknowledged")
    _do(config, act)


@incidents.command("postmortem")
def postmortem(
    incident_id: str,
    publish: Annotated[bool, Opt(help="Publish it on the status page.")] = False,
    file: Annotated[Path | None, Opt(help="Its text from this file (default: the draft).")]
    = None,
    config: ConfigOpt = None,
) -> None:
    """Print the drafted postmortem; with --publish, publish it (edited with --file)."""
    text = file.read_text(encoding="utf-8") if file is not None else None

    async def act(book: Incidents) -> None:
        if publish:
            _said(await book.publish_postmortem(incident_id, text), "published the "
                  "postmortem of")
            return
        found = await book.get(incident_id)
        out.print(found.row.postmortem or "No postmortem yet: it is drafted when the "
                  "incident is resolved.", markup=False, highlight=False)
    _do(config, act)


@incidents.command("maintenance")
def maintenance(
    name: Annotated[str, typer.Argument(help="e.g. 'Database upgrade'.")],
    body: Body,
    component: Annotated[list[str], Opt("--component", help="A component key (repeatable).")],
    start: Annotated[str, Opt(help="When it starts: 'now' or a delay like 2h.")] = "now",
    lasts: Annotated[str, Opt("--for", help="How long, e.g. 30m, 2h.")] = "1h",
    config: ConfigOpt = None,
) -> None:
    """Schedule maintenance: its components show under_maintenance while it runs, and the
    detector opens no incident for them."""
    begin = time.time() + (0 if start == "now" else parse_duration(start))
    end = begin + parse_duration(lasts)

    async def act(book: Incidents) -> None:
        _said(await book.schedule(name, body, begin, end, component), "scheduled")
    _do(config, act)
