"""The ASGI front: request ids, routing, sending replies, and noticing clients that leave.

Plain ASGI rather than a framework's request/response objects, because this is the hot path
of every call; pages for people (status, sign-in) are mounted beside it by later issues.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gatehouse.config import Settings
from gatehouse.context import Reply, RequestContext, header_dict
from gatehouse.edge.connections import Connections
from gatehouse.edge.protocol import ON_GONE, REFUSED, REQUEST_ID, declares_body
from gatehouse.errors import (
    GatehouseError,
    MethodNotAllowed,
    RouteNotFound,
    UnsupportedEndpoint,
)
from gatehouse.heap import freeze_long_lived
from gatehouse.htmlpage import secured
from gatehouse.pipeline import Pipeline
from gatehouse.probes import Probes
from gatehouse.telemetry.ids import check_client_request_id, new_request_id
from gatehouse.telemetry.metrics import Metrics

log = logging.getLogger("gatehouse.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# OpenAI endpoints this gateway does not serve: a 404 that says so and lists what it serves
# (a route, such as /v1/images/generations, is found before these prefixes are looked at)
UNSERVED = ("/v1/images/", "/v1/audio/", "/v1/files", "/v1/batches",
            "/v1/uploads", "/v1/fine_tuning/", "/v1/vector_stores", "/v1/assistants",
            "/v1/threads", "/v1/realtime", "/v1/conversations", "/v1/containers", "/v1/evals",
            "/v1/videos", "/v1/chatkit")
SERVED = ("POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, "
          "POST /v1/responses, POST /v1/moderations, POST /v1/images/generations, "
          "POST /v1/audio/speech, POST /v1/audio/transcriptions, POST /v1/audio/translations, "
          "GET /v1/models")


def unserved(method: str, path: str) -> UnsupportedEndpoint | None:
    if not path.startswith(UNSERVED):
        return None
    return UnsupportedEndpoint(f"{method} {path} is an OpenAI endpoint this gateway does not "
                               f"serve. It serves {SERVED} (and the usage and health "
                               "endpoints in docs/api.md).")


@dataclass(slots=True)
class Route:
    method: str
    pipeline: Pipeline
    endpoint: str
    # the methods a path of this (prefix) route answers, where more than ``method`` (not POST)
    methods: Callable[[str], tuple[str, ...]] | None = None


class Gateway:
    def __init__(self, settings: Settings, routes: dict[str, Route],
                 prefix_routes: dict[str, Route], fallback: Pipeline, metrics: Metrics,
                 probes: Probes, on_shutdown: list[Callable[[], Awaitable[None]]],
                 on_startup: list[Callable[[], Awaitable[None]]] | None = None,
                 mounts: dict[str, Any] | None = None,
                 connections: Connections | None = None) -> None:
        self.settings = settings
        self.routes = routes
        self.prefix_routes = prefix_routes
        self.fallback = fallback
        self.metrics = metrics
        self.probes = probes
        self.on_shutdown = on_shutdown
        self.on_startup = on_startup or []
        # other ASGI apps (admin API, web pages) by path prefix; they get request ids too
        self.mounts = list((mounts or {}).items())
        self.started = False
        # the connection layer's registry (gatehouse/edge/protocol.py finds it here)
        self.connections = connections or Connections(settings.server, metrics)
        self.max_body = settings.server.max_body_bytes
        self.local: dict[str, Callable[[RequestContext], Awaitable[Reply]]] = {
            "/healthz": self._healthz, "/readyz": self._readyz}
        if settings.telemetry.metrics:
            self.local["/metrics"] = self._metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                # what exists now lives as long as the process: keep it out of every GC pass
                freeze_long_lived()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Migrate the store, subscribe to the state layer, …: before the first request."""
        if self.started:
            return
        for start in self.on_startup:
            await start()
        self.started = True

    async def aclose(self) -> None:
        self.connections.close()
        for close in self.on_shutdown:
            try:
                await close()
            except Exception:
                log.exception("closing a backend failed")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_dict(scope["headers"])
        path: str = scope["path"]
        if path not in self.routes:
            for prefix, app in self.mounts:
                # a mount at "/" is the home page alone, not every path (404s stay the API's)
                if path.startswith(prefix) if prefix != "/" else path == "/":
                    return await self._mounted(app, scope, receive, send)
        ctx = RequestContext(scope.get(REQUEST_ID) or new_request_id(), scope["method"], path,
                             headers,
                             scope.get("client"), receive, scope.get("query_string", b""))
        local = self.local.get(path)
        route = None if local is not None else self._route(path)
        refuse: GatehouseError | None = None
        try:
            client_id = headers.get("x-client-request-id")
            if client_id is not None:
                ctx.client_request_id = check_client_request_id(client_id)
            if local is not None:
                ctx.endpoint = path.strip("/")
                if ctx.method not in ("GET", "HEAD"):  # HEAD: what uptime monitors send
                    raise MethodNotAllowed(f"{ctx.method} is not allowed on {path}; use GET.",
                                           headers={"allow": "GET, HEAD"})
            elif route is None:
                ctx.endpoint = "unknown"
                raise unserved(ctx.method, path) or RouteNotFound(f"Unknown request URL: {ctx.method} {path}. Please check "
                                    "the URL for typos: API endpoints start with /v1/ (for "
                                    "example POST /v1/chat/completions, GET /v1/models).")
            else:
                ctx.endpoint = route.endpoint
                allowed = route.methods(path) if route.methods else (route.method,)
                if ctx.method not in allowed:
                    allow = ", ".join(allowed)
                    raise MethodNotAllowed(f"{ctx.method} is not allowed on {path}; use "
                                           f"{allow}.", headers={"allow": allow})
        except GatehouseError as exc:
            refuse = exc
        if refuse is not None:
            # refused before the route's own stages: only the common ones (telemetry, …) run
            return await self._respond(
                ctx, await self.fallback.handle(ctx, refuse=refuse, defer=True), send)
        if local is not None:  # probes: answered directly and not access-logged
            return await self._respond(ctx, await local(ctx), send)
        assert route is not None
        pipeline = route.pipeline

        me = asyncio.current_task()
        assert me is not None
        watcher: asyncio.Task[None] | None = None
        watching = left = False

        def gone() -> None:
            """The client went before the answer was complete: the request is cancelled
            (unless its answer is written and only its exits run)."""
            nonlocal left
            if not ctx.exiting:
                left = True
                ctx.refused = scope.get(REFUSED)
                me.cancel()

        def watch() -> None:
            nonlocal watcher, watching
            watching = True
            if REQUEST_ID in scope and (ctx.method == "POST" or
                                        not declares_body(scope["headers"])):
                scope[ON_GONE] = gone  # the edge protocol tells us (edge/protocol.py ON_GONE)
            else:
                # another ASGI server; or a body no stage reads (a GET's), which must be read
                # away: past 64 KiB unread, uvicorn stops reading the socket, and the client's
                # leaving went unheard. A task waits on receive() for the disconnect.
                watcher = asyncio.ensure_future(self._watch(receive, gone))

        async def receive_then_watch() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.disconnect" and REFUSED in scope:
                # the connection layer answered (the body stopped arriving: 408) and closed
                raise scope[REFUSED]
            if not message.get("more_body") and not watching:
                watch()
            return message

        if ctx.method == "POST":
            # the body is the schema stage's to read; watching for a disconnect starts after
            ctx.receive = receive_then_watch
        else:
            watch()
        try:
            reply = await pipeline.handle(ctx, defer=True)
            await self._respond(ctx, reply, send)
        except asyncio.CancelledError:
            if left:
                me.uncancel()  # our own doing: the client left; the exits have run
                return
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            # nothing may hold this request once it ends: the scope (kept by the connection)
            # the hook, ctx (the cancelled watcher's traceback keeps it) this closure
            scope.pop(ON_GONE, None)
            ctx.receive = None
            watcher = None

    @staticmethod
    async def _mounted(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        state = dict(scope.get("state") or {})
        state["request_id"] = request_id
        tag = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # whatever a mounted app answers (its own pages, its framework's error pages,
                # FastAPI's docs) carries the page headers when it is HTML, nosniff when not
                message = {**message, "headers": secured([tag, *message.get("headers", [])])}
            await send(message)

        await app({**scope, "state": state}, receive, send_with_id)

    def _route(self, path: str) -> Route | None:
        route = self.routes.get(path)
        if route is None:
            for prefix, candidate in self.prefix_routes.items():
                if path.startswith(prefix):
                    return candidate
        return route

    @staticmethod
    async def _watch(receive: Receive, gone: Callable[[], None]) -> None:
        """Wait for the client to go away, then call ``gone``."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone()
                return

    @staticmethod
    def _headers(ctx: RequestContext, reply: Reply) -> list[tuple[bytes, bytes]]:
        out = [(b"x-request-id", ctx.request_id.encode())]
        if ctx.client_request_id is not None:
            out.append((b"x-client-request-id", ctx.client_request_id.encode()))
        for source in (reply.headers, ctx.response_headers):
            for name, value in source.items():
                out.append((name.encode("latin-1", "replace"),
                            value.encode("latin-1", "replace")))
        out.append((b"openai-processing-ms",
                    str(round((time.perf_counter() - ctx.started) * 1000)).encode()))
        return out

    async def _respond(self, ctx: RequestContext, reply: Reply, send: Send) -> None:
        stream = reply.stream
        if stream is None:
            try:
                out = self._headers(ctx, reply)
                out.append((b"content-length", str(len(reply.body)).encode()))
                await send({"type": "http.response.start", "status": reply.status,
                            "headers": out})
                # HEAD: the GET's headers (its length included), no body
                await send({"type": "http.response.body",
                            "body": b"" if ctx.method == "HEAD" else reply.body})
            finally:
                # the stages' exits, once the answer is written (Pipeline.handle's defer; the
                # connection writes a complete answer at once, edge/protocol.py): the caller
                # does not wait for the accounting. Before anything else runs — a request
                # pipelined behind this one starts at the next turn of the loop, after them.
                after, reply.after = reply.after, None
                if after is not None:
                    await after()
            return
        try:
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": self._headers(ctx, reply)})
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await stream.aclose()  # a stream that ended runs its stages' exits here

    # -- local endpoints -------------------------------------------------------------------
    async def _healthz(self, ctx: RequestContext) -> Reply:
        return Reply(200, {"content-type": "application/json", "cache-control": "no-store"},
                     b'{"status":"ok"}')

    async def _readyz(self, ctx: RequestContext) -> Reply:
        ready, report = await self.probes.check()
        return Reply(200 if ready else 503,
                     {"content-type": "application/json", "cache-control": "no-store"},
                     orjson.dumps(report))

    async def _metrics(self, ctx: RequestContext) -> Reply:
        return Reply(200, {"content-type": "text/plain; version=0.0.4; charset=utf-8"},
                     self.metrics.render())
