"""``gatehouse health``: the health view (telemetry/health.py) of a filter over a window, straight
on the store's minute rollups — a table per error class and per model, with sparklines of
requests and error rate; ``--json`` prints what ``GET /admin/v1/health`` answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from gatehouse.cli.accounts import _run
from gatehouse.cli.options import ConfigOpt
from gatehouse.errors import GatehouseError, InvalidRequest
from gatehouse.identity.service import IdentityService
from gatehouse.store.accounts import AccountError
from gatehouse.telemetry.compaction import retention
from gatehouse.telemetry.health import FILTERS, WINDOWS, parse_query, read_health

out = Console()
BARS = "▁▂▃▄▅▆▇█"


def spark(values: Sequence[float | None]) -> str:
    """One bar per value, scaled to the largest; a blank where there is no value."""
    top = max((v for v in values if v is not None), default=0.0)
    return "".join(" " if v is None else BARS[0] if top <= 0 else
                   BARS[min(len(BARS) - 1, round(v / top * (len(BARS) - 1)))] for v in values)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def render(view: dict[str, Any]) -> Panel:
    shown = ", ".join(f"{k}={v}" for k, v in view["filter"].items() if v is not None)
    summary = Table(show_header=False, box=None, pad_edge=False)
    lat, first = view["latency_ms"], view["ttfb_ms"]
    summary.add_row("[dim]requests[/]", f"{view['requests']:,}")
    summary.add_row("[dim]errors[/]", f"{view['errors']:,} ({_pct(view['error_rate'])})")
    summary.add_row("[dim]latency p50 / p95 / p99 ms[/]",
                    " / ".join(_ms(lat[p]) for p in ("p50", "p95", "p99")))
    summary.add_row("[dim]first byte p50 / p95 / p99 ms[/]",
                    " / ".join(_ms(first[p]) for p in ("p50", "p95", "p99")))
    summary.add_row("[dim]admission wait, mean ms[/]", _ms(view["admission_wait_ms"]["mean"]))
    summary.add_row("[dim]tokens in / out[/]",
                    f"{view['tokens']['prompt']:,} / {view['tokens']['completion']:,}")
    points = view["series"]["points"]
    step = view["series"]["bucket_seconds"] // 60
    per = f"{step} min" if step < 60 else f"{step // 60} h"
    summary.add_row(f"[dim]requests per {per}[/]",
                    f"{spark([p['requests'] for p in points])}  "
                    f"max {max((p['requests'] for p in points), default=0):,}")
    summary.add_row(f"[dim]error rate per {per}[/]",
                    f"[red]{spark([p['error_rate'] for p in points])}[/]  max "
                    f"{_pct(max((p['error_rate'] or 0 for p in points), default=0))}")
    classes = Table("error class", "requests", "share", title="by error class",
                    title_justify="left", title_style="bold")
    for name, c in view["error_classes"].items():
        if c["count"]:
            style = "green" if name == "ok" else "red"
            classes.add_row(f"[{style}]{name}[/]", f"{c['count']:,}", _pct(c["share"]))
    models = Table("model", "requests", "errors", "error rate", "p50 ms", "p95 ms", "p99 ms",
                   title="by model", title_justify="left", title_style="bold")
    for m in view["by_model"]:
        models.add_row(m["model"] or "[dim](none)[/]", f"{m['requests']:,}",
                       f"{m['errors']:,}", _pct(m["error_rate"]),
                       *(_ms(m["latency_ms"][p]) for p in ("p50", "p95", "p99")))
    notes = "\n".join(f"[dim]· {n}[/]" for n in view["notes"])
    return Panel(Group(summary, "", classes, "", models, "", notes),
                 title=f"health · {view['window']} · {shown or 'all traffic'}",
                 subtitle=f"{view['start']} → {view['end']}",
                 border_style="red" if view["errors"] else "green")


def health(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    tier: Annotated[str | None, typer.Option(help="Only this tier.")] = None,
    org: Annotated[str | None, typer.Option(help="Only this org (name or id).")] = None,
    project: Annotated[str | None, typer.Option(
        help="Only this project (org/project, or its id).")] = None,
    component: Annotated[str | None, typer.Option(
        help="Only this component: api, web, login, admin.")] = None,
    window: Annotated[str, typer.Option(help=f"One of {', '.join(WINDOWS)}.")] = "1h",
    json: Annotated[bool, typer.Option("--json", help="Print the JSON of "
                                                      "GET /admin/v1/health.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Requests, errors by class, latency percentiles, tokens and sparklines over a window,
    from the minute rollups."""
    given = dict(zip(FILTERS, (model, tier, org, project, component), strict=True))
    try:
        query = parse_query([*((k, v) for k, v in given.items() if v is not None),
                             ("window", window)])
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.message, param_hint=f"--{exc.param}") from None

    async def act(ids: IdentityService) -> None:
        try:
            view = await read_health(ids.store, query,
                                     retention=retention(ids.settings.telemetry))
        except GatehouseError as exc:
            raise AccountError("not_found" if exc.status == 404 else "invalid",
                               exc.message) from None
        if json:
            print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        else:
            out.print(render(view))
    _run(config, act, reads=True)
