"""The edge in front of the mounted apps (web pages, admin API, the challenge routes): the
same ``Edge.screen`` as the pipeline stage, as ASGI middleware.

The visitor is left in ``scope["state"]["visitor"]`` for the app behind, and 401 answers the
app sends count as offences, as they do on the API path."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.edge.screen import Edge
from gatehouse.pipeline import answer


class EdgeGuard:
    def __init__(self, app: ASGIApp, edge: Edge) -> None:
        self.app = app
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        edge = self.edge
        visitor = edge.visitor_of_scope(scope)
        state = scope.setdefault("state", {})
        visitor.request_id = state.get("request_id") or ""
        state["visitor"] = visitor  # for the app behind, and the request's record
        verdict = await edge.screen(visitor)
        reply = verdict.reply
        if verdict.error is not None:
            reply = answer(verdict.error, state.get("request_id"), visitor.wants_html)
        if reply is not None:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
            headers.append((b"content-length", str(len(reply.body)).encode()))
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": headers})
            await send({"type": "http.response.body", "body": reply.body})
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                edge.offense(visitor, "unauthorized")
            await send(message)

        await self.app(scope, receive, watch)
