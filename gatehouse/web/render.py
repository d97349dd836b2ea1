"""Pages and errors as Starlette answers: the page in the common look with the page headers
(:mod:`gatehouse.htmlpage`), and errors as pages (or JSON)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.context import prefers_html
from gatehouse.errors import GatehouseError
from gatehouse.htmlpage import PAGE_HEADERS, error_page, page, secured
from gatehouse.telemetry.ids import new_request_id


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(page(template, request_id=request_id(request), **context), status,
                        headers=PAGE_HEADERS)


def problem(request: Request, error: GatehouseError, *, advice: str | None = None,
            back: str | None = None) -> Response:
    """The error as a page for browsers, or as OpenAI's error body for API clients."""
    headers = {**PAGE_HEADERS, **error.response_headers()}
    rid = request_id(request)
    if not prefers_html(request.headers.get("accept", "")):
        return Response(error.body(rid or None), error.status, headers,
                        media_type="application/json")
    return HTMLResponse(error_page(error, rid, advice=advice, back=back), error.status,
                        headers=headers)


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
                headers = secured(list(message.get("headers", [])), every=True)
                if own_id:
                    headers.append((b"x-request-id", state["request_id"].encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
