"""``gatehouse requests show ID``: one request from the request log, by its request id, client
request id or Ray ID — straight on the store named in the config (records reach it within a
second or two of the answer)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from gatehouse.cli.accounts import _run
from gatehouse.cli.options import ConfigOpt
from gatehouse.errors import InvalidRequest
from gatehouse.identity.service import IdentityService
from gatehouse.store.accounts import AccountError
from gatehouse.store.requests import RequestRows
from gatehouse.telemetry.lookup import check_id, operator_view

out = Console()
requests = typer.Typer(help="Look requests up in the request log.", no_args_is_help=True)

# the panel's sections: (title, fields)
SECTIONS = (
    ("request", ("request_id", "client_request_id", "ray_id", "time", "component", "method",
                 "path", "endpoint", "model", "stream")),
    ("who", ("org", "project", "key_id", "user_id", "tier", "client")),
    ("answer", ("status", "outcome", "error_class", "error_type", "error_code",
                "error_cause")),
    ("stages", ("edge", "quota", "admission_wait_ms", "attempts", "backend",
                "upstream_status")),
    ("usage and timings", ("prompt_tokens", "completion_tokens", "total_tokens",
                           "latency_ms", "ttfb_ms")),
)


def panel(view: dict[str, Any]) -> Panel:
    parts: list[Any] = []
    for title, names in SECTIONS:
        table = Table(title=title, title_justify="left", title_style="bold", show_header=False,
                      box=None,
                      pad_edge=False)
        for name in names:
            value = view.get(name)
            if value is None or value == []:
                continue
            table.add_row(f"[dim]{name}[/]", ", ".join(value) if isinstance(value, list)
                          else str(value))
        parts.append(table)
    if view["other_matches"]:
        parts.append(f"[dim]older requests with this id:[/] {', '.join(view['other_matches'])}")
    style = "green" if view["error_class"] == "ok" else "red"
    return Panel(Group(*parts), title=f"{view['request_id']} · {view['status']}",
                 border_style=style)


@requests.command("show")
def requests_show(
    request_id: Annotated[str, typer.Argument(
        metavar="ID", help="A request id (req_…), client request id or Ray ID.")],
    json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """What happened to one request: who asked, what each stage decided, the answer."""
    try:
        any_id = check_id(request_id)
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.message) from None

    async def act(ids: IdentityService) -> None:
        found = await RequestRows(ids.store).find(any_id)
        if not found:
            days = ids.settings.telemetry.request_log_days
            raise AccountError("not_found", f"no request {any_id} in the request log (records "
                               f"reach it within a second or two and are kept {days:g} days)")
        view = operator_view(found)
        if json:
            print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        else:
            out.print(panel(view))
    _run(config, act, reads=True)
