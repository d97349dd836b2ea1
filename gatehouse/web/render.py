"""The look of every page, the headers every page sends, and errors as pages (or JSON).

The stylesheet is inline but allowed by its hash, so the Content-Security-Policy permits no
inline script and no other inline style.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.context import prefers_html
from gatehouse.errors import GatehouseError
from gatehouse.telemetry.ids import new_request_id

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
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "content-security-policy": (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}

_env = Environment(loader=PackageLoader("gatehouse", "templates"),
                   autoescape=select_autoescape(["html"]))


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def page(template: str, **context: Any) -> str:
    """A page in the common look, for code that answers without a Starlette request."""
    return str(_env.get_template(template).render(style=Markup(STYLE), **context))


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(page(template, request_id=request_id(request), **context), status,
                        headers=PAGE_HEADERS)


def problem(request: Request, error: GatehouseError, *, advice: str | None = None,
            back: str | None = None) -> Response:
    """The error as a page for browsers, or as OpenAI's error body for API clients."""
    headers = {**PAGE_HEADERS, **error.response_headers()}
    if not prefers_html(request.headers.get("accept", "")):
        return Response(error.body(request_id(request) or None), error.status, headers,
                        media_type="application/json")
    response = render(request, "problem.html", error.status, error=error,
                      advice=advice or error.advice, back=back,
                      retry_after=headers.get("retry-after"))
    response.headers.update(error.response_headers())
    return response


class PageHeaders:
    """Gives every answer of the web app its request id (when nothing upstream set one) and
    the page headers (when the answer has not set them itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        own_id = "request_id" not in state
        if own_id:
            state["request_id"] = new_request_id()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in PAGE_HEADERS.items()
                            if k.encode() not in present]
                if own_id:
                    headers.append((b"x-request-id", state["request_id"].encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
