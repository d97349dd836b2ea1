"""Pages for browsers, wherever they are answered (the pipeline, the edge, the web apps): one
look, and the one set of headers every HTML answer of the gateway carries.

The stylesheet is inline but allowed by its hash, so the Content-Security-Policy permits no
inline script and no other inline style; a page that runs a script of its own (the human
check) allows that script alone, by its hash (:func:`page_headers`). Every page is
``no-store``: each carries a request id, and some a Ray ID, an address or an account.
JSON answers get ``nosniff`` (:data:`NOSNIFF`), so no browser reads one as a page.

Framework-free on purpose: the pipeline renders its error pages from here without Starlette.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from gatehouse.errors import GatehouseError, roughly
from gatehouse.turns import in_turns

STYLE = """
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.5rem; margin-bottom: .25rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
  .code { color: #777; font-size: .9rem; }
  .next, .notice { background: #f4f6f8; border-left: 4px solid #4a6fa5; padding: .75rem 1rem; }
  .error { background: #fbf1f0; border-left: 4px solid #b3372b; padding: .75rem 1rem; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
  dt { color: #777; } dd { margin: 0; }
  form { margin: 1rem 0; } label { display: block; margin-top: .75rem; }
  input[type=email], input[type=password] { width: 100%; max-width: 24rem; padding: .4rem; font: inherit; }
  button { margin-top: 1rem; padding: .4rem 1rem; font: inherit; cursor: pointer; }
  .hint { color: #555; font-size: .9rem; }
  footer { margin-top: 3rem; color: #777; font-size: .85rem; border-top: 1px solid #ddd; padding-top: .5rem; }
  code { font-family: ui-monospace, monospace; }
"""


def source_hash(text: str) -> str:
    """A CSP source that allows exactly this inline ``<script>`` or ``<style>`` content."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


CSP = {"default-src": "'none'", "style-src": source_hash(STYLE), "form-action": "'self'",
       "frame-ancestors": "'none'", "base-uri": "'none'"}
NOSNIFF = {"x-content-type-options": "nosniff"}


def page_headers(**sources: str) -> dict[str, str]:
    """The headers of an HTML answer. ``sources`` add or replace CSP directives, written
    with underscores: ``page_headers(script_src=source_hash(script))``."""
    csp = {**CSP, **{name.replace("_", "-"): value for name, value in sources.items()}}
    return {"cache-control": "no-store", "x-frame-options": "DENY",
            "referrer-policy": "same-origin", **NOSNIFF,
            "content-security-policy": "; ".join(f"{k} {v}" for k, v in csp.items())}


PAGE_HEADERS = page_headers()
_RAW_PAGE = [(k.encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
_RAW_NOSNIFF = [(k.encode(), v.encode()) for k, v in NOSNIFF.items()]


def secured(headers: list[tuple[bytes, bytes]], *,
            every: bool = False) -> list[tuple[bytes, bytes]]:
    """An answer's raw headers plus those of the set it lacks: all of them on an HTML answer
    (or on any answer, with ``every``), ``nosniff`` on others. Headers an answer set itself
    (a page with a script of its own has its own CSP) are left as they are."""
    present = {name.lower() for name, _ in headers}
    html = every or any(name.lower() == b"content-type" and value.startswith(b"text/html")
                        for name, value in headers)
    return headers + [(k, v) for k, v in (_RAW_PAGE if html else _RAW_NOSNIFF)
                      if k not in present]


_env = Environment(loader=PackageLoader("gatehouse", "templates"),
                   autoescape=select_autoescape(["html"]))


def page(template: str, **context: Any) -> str:
    """A page in the common look."""
    return str(_env.get_template(template).render(style=Markup(STYLE), **context))


async def page_in_turns(template: str, **context: Any) -> str:
    """:func:`page`, made a piece of the template at a time with the event loop free between
    them (:mod:`gatehouse.turns`): for a page rebuilt in the background of a serving worker
    (the status page, every few seconds — ~5 ms at once held every request of the worker)."""
    pieces = _env.get_template(template).generate(style=Markup(STYLE), **context)
    return "".join([piece async for piece in in_turns(pieces)])


def error_page(error: GatehouseError, request_id: str | None, *, advice: str | None = None,
               back: str | None = None) -> str:
    """The browser twin of :meth:`GatehouseError.body`: what happened, the id, what to do."""
    return page(error.template, error=error, request_id=request_id,
                advice=advice or error.advice, back=back,
                retry_after=error.response_headers().get("retry-after"),
                wait=roughly(error.retry_after) if error.retry_after is not None else None)
