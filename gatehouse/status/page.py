"""``/status`` as a page: the indicator, each component with 90 daily bars ("no data" drawn
apart from "up"), its uptime over the days that have data, live incidents and maintenance
with their updates, and past incidents with their postmortems. No script; one stylesheet of
its own allowed by hash; bars are flex boxes, so the page reads at phone width."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from gatehouse.htmlpage import STYLE, page_headers, page_in_turns, source_hash
from gatehouse.status.components import Component
from gatehouse.status.history import Day
from gatehouse.status.incidents import DONE
from gatehouse.status.statuspage import View

PAGE_STYLE = """
  body { max-width: 52rem; margin-top: 2rem; }
  .banner { padding: .75rem 1rem; border-radius: 4px; color: #fff; font-weight: 600; }
  .none { background: #2e7d4f; } .minor { background: #b7791f; } .major { background: #c05621; }
  .critical { background: #b3372b; } .maintenance { background: #4a6fa5; }
  .component { margin: 1.25rem 0; } .head { display: flex; justify-content: space-between; gap: 1rem; flex-wrap: wrap; }
  .state { font-size: .9rem; } .state.operational { color: #2e7d4f; } .state.degraded_performance { color: #b7791f; }
  .state.partial_outage { color: #c05621; } .state.major_outage { color: #b3372b; } .state.under_maintenance { color: #4a6fa5; }
  .bars { display: flex; gap: 1px; height: 2rem; margin: .25rem 0; }
  .bar { flex: 1 1 0; min-width: 0; border-radius: 1px; }
  .bar.up { background: #3ba55d; } .bar.degraded { background: #e0a526; } .bar.down { background: #c9392b; }
  .bar.nodata { background: #d7dbe0; }
  .axis { display: flex; justify-content: space-between; color: #777; font-size: .8rem; }
  .legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .25rem 0 .75rem; vertical-align: middle; }
  .incident { border-left: 4px solid #c05621; padding: .25rem 1rem; margin: 1rem 0; }
  .incident.done { border-color: #aaa; } .update { margin: .5rem 0; } .when { color: #777; font-size: .85rem; }
  pre { white-space: pre-wrap; font: inherit; background: #f4f6f8; padding: .5rem; }
  .group { color: #555; font-size: .85rem; text-transform: uppercase; letter-spacing: .05em; margin-top: 1.5rem; }
"""
HEADERS = page_headers(style_src=f"{source_hash(STYLE)} {source_hash(PAGE_STYLE)}")


def when(text: str | None) -> str:
    if not text:
        return ""
    at = datetime.fromisoformat(text).astimezone(UTC)
    return at.strftime("%b %d, %H:%M UTC")


def bar_class(d: Day | None, c: Component) -> str:
    if d is None or d.uptime is None:
        return "nodata"
    if d.uptime >= c.availability:
        return "up"
    return "degraded" if d.uptime >= 1 - 10 * (1 - c.availability) else "down"


def bars_of(c: Component, days: Mapping[tuple[str, int], Day], today: int,
            count: int) -> tuple[list[dict[str, str]], float | None]:
    out = []
    requests = faults = 0
    for day in range(today - count + 1, today + 1):
        d = days.get((c.key, day))
        label = datetime.fromtimestamp(day * 86400, UTC).strftime("%b %d")
        kind = bar_class(d, c)
        if d is not None and d.uptime is not None:
            requests += d.requests
            faults += d.faults
            title = f"{label}: {d.uptime:.3%} up ({d.faults:,} of {d.requests:,} failed)"
        else:
            title = f"{label}: no data"
        out.append({"kind": kind, "title": title})
    return out, (1 - faults / requests if requests else None)


async def render_page(view: View, summary: dict[str, Any],
                      days: Mapping[tuple[str, int], Day], history_days: int,
                      keep_days: float) -> str:
    """The page, made in turns (htmlpage.page_in_turns): it is rebuilt every few seconds in
    each serving worker, ~5 ms of work that, done at once, held every request meanwhile."""
    today = int(view.now // 86400)
    states = {c["id"]: c["status"] for c in summary["components"]}
    rows = []
    group = None
    for c in view.components:
        if not c.shown:
            continue
        state = states.get(view.component_id(c.key), "operational")
        if c.only_show_if_degraded and state == "operational":
            continue
        bars, uptime = bars_of(c, days, today, history_days)
        rows.append({"key": c.key, "name": c.name, "description": c.description,
                     "state": state, "bars": bars, "uptime": uptime,
                     "group": c.group if c.group != group else None})
        group = c.group
        await asyncio.sleep(0)  # a component's days at a time
    incidents = [i for i in view.incidents if i.row.kind == "incident"]
    return await page_in_turns(
        "status.html", view=view, status=summary["status"], rows=rows,
        live=summary["incidents"], maintenance=summary["scheduled_maintenances"],
        past=[i for i in incidents if i.row.status in DONE][:20], days=history_days,
        keep_days=keep_days, when=when, page_style=Markup(PAGE_STYLE), request_id=None)
