"""The admin API's body limit: a larger body is 413 ``request_too_large`` in OpenAI's error
shape with the request id, as every other refusal here.

Not FastAPI's ``max_body_size``: Starlette's limit behind it answers a plain-text "Content Too
Large" without the request id, and puts it in place of whatever the app answered to a request
whose Content-Length is over the limit."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.admin.errors import render
from gatehouse.errors import RequestTooLarge


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.message = f"The request body is over the admin API's limit of {limit:,} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.limit:
            # refused before a byte of it is read
            return await render(RequestTooLarge(self.message), scope)(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # a chunked body says no length: counted as it comes
                # raised inside the route's reading of the body: FastAPI passes an
                # HTTPException on (anything else becomes its 400) to errors.from_http
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)
