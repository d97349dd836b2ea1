"""``GET /admin/health``: the health view (telemetry/health.py) as a page — the filter in force,
the totals, bar charts of requests and error rate over the window drawn as SVG on the server
(no script, no CDN), a row per error class and per model, and what the aggregate hides. The same
query parameters as ``GET /admin/v1/health``, and the same admin key (``Authorization``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from gatehouse.admin.errors import request_id
from gatehouse.errors import GatehouseError
from gatehouse.htmlpage import STYLE, error_page, page, page_headers, source_hash
from gatehouse.identity.service import IdentityService
from gatehouse.telemetry.compaction import retention
from gatehouse.telemetry.health import FILTERS, WINDOWS, parse_query_string, read_health

PATH = "/admin/health"
WIDTH, HEIGHT = 640, 120
PAGE_STYLE = """
  body { max-width: 52rem; }
  table { border-collapse: collapse; margin: .5rem 0; } td, th { padding: .2rem .75rem; text-align: right; }
  td:first-child, th:first-child { text-align: left; } th { color: #777; font-weight: normal; }
  svg { display: block; background: #f8f9fa; } .bad { color: #b3372b; }
  input, select { font: inherit; width: 8rem; } label { display: inline-block; margin-right: .5rem; }
"""
HEADERS = page_headers(style_src=f"{source_hash(STYLE)} {source_hash(PAGE_STYLE)}")


def bars(values: Sequence[float | None], *, colour: str, label: Callable[[float], str],
         name: str) -> Markup:
    """One bar per value, scaled to the largest, its value in ``data-value`` and a tooltip."""
    top = max((v for v in values if v is not None), default=0.0)
    step = WIDTH / max(1, len(values))
    head = (f'<svg id="{name}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
            f'height="{HEIGHT + 16}" viewBox="0 0 {WIDTH} {HEIGHT + 16}" role="img" '
            f'aria-label="{escape(name)}">')
    parts = [head]
    for i, v in enumerate(values):
        h = 0.0 if v is None or top <= 0 else max(1.0, v / top * HEIGHT)
        shown = "no requests" if v is None else label(v)
        parts.append(f'<rect class="bar" x="{i * step + 0.5:.1f}" y="{HEIGHT - h:.1f}" '
                     f'width="{max(1.0, step - 1):.1f}" height="{h:.1f}" fill="{colour}" '
                     f'data-value="{"" if v is None else v}"><title>{shown}</title></rect>')
    parts.append(f'<text x="2" y="{HEIGHT + 13}" font-size="11" fill="#555">max '
                 f'{escape(label(top))}</text></svg>')
    return Markup("".join(parts))


def health_page_route(identity: IdentityService
                      ) -> Callable[[Request], Awaitable[HTMLResponse]]:
    kept = retention(identity.settings.telemetry)

    async def health_page(request: Request) -> HTMLResponse:
        rid = request_id(request.scope)
        try:
            query = parse_query_string(request.scope.get("query_string", b""))
            view = await read_health(identity.store, query, retention=kept)
        except GatehouseError as exc:
            return HTMLResponse(error_page(exc, rid, back=PATH), status_code=exc.status,
                                headers=HEADERS)
        points = view["series"]["points"]
        charts = {
            "requests": bars([p["requests"] for p in points], colour="#4a6fa5",
                             label=lambda v: f"{v:,.0f}", name="chart-requests"),
            "error_rate": bars([p["error_rate"] for p in points], colour="#b3372b",
                               label=lambda v: f"{v:.1%}", name="chart-error-rate"),
        }
        body = page("health.html", view=view, charts=charts, filters=FILTERS,
                    windows=list(WINDOWS), step=view["series"]["bucket_seconds"] // 60,
                    request_id=rid, page_style=Markup(PAGE_STYLE), path=PATH)
        return HTMLResponse(body, headers=HEADERS)

    return health_page
