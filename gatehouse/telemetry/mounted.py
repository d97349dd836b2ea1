"""RequestRecords for the mounted apps (web pages, sign-in, admin API, the human check's
routes), which answer outside the pipeline: ASGI middleware in front of each app's edge
guard, so the guard's 1020s and challenges are recorded too.

What the pipeline's stages note on the context is read here from the answer: the status,
``gatehouse-ray`` / ``gatehouse-mitigated`` (the edge), the error's type and code from an
OpenAI-shaped JSON body, and who asked from what the app left in ``scope["state"]``."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import InvalidClientRequestId
from gatehouse.telemetry.ids import check_client_request_id, new_request_id
from gatehouse.telemetry.record import RequestRecord, error_class
from gatehouse.telemetry.stage import TelemetryStage

BODY_KEPT = 8192  # an error body longer than this is not read for its code


class Recorded:
    def __init__(self, app: ASGIApp, telemetry: TelemetryStage, component: str) -> None:
        self.app = app
        self.telemetry = telemetry
        self.component = component

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or state.setdefault("request_id", new_request_id())
        ctx = RequestContext(request_id, scope["method"], scope["path"], {}, scope.get("client"))
        for name, value in scope.get("headers", ()):
            if name.lower() == b"x-client-request-id":
                try:
                    ctx.client_request_id = check_client_request_id(value.decode("latin-1"))
                except InvalidClientRequestId:
                    pass  # recorded without it; the app decides what to answer
        answer = _Answer()

        async def receive_watch() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not answer.done:
                answer.gone = True
            return message

        async def send_watch(message: Message) -> None:
            answer.see(message)
            await send(message)

        kind = "ok"
        try:
            await self.app(scope, receive_watch, send_watch)
        except BaseException:
            kind = "client_disconnected" if answer.gone else "error"
            answer.status = 499 if answer.gone else 500
            raise
        finally:
            if answer.gone and not answer.done:
                kind, answer.status = "client_disconnected", 499
            self._record(ctx, scope, answer, kind)

    def _record(self, ctx: RequestContext, scope: Scope, answer: _Answer, kind: str) -> None:
        state = scope["state"]
        ctx.endpoint = endpoint_of(scope)
        visitor = state.get("visitor")
        if visitor is not None:
            ctx.client_ip = visitor.ip
            ctx.edge_verdict = "pass"
        if answer.ray is not None:
            ctx.ray_id = answer.ray
            ctx.edge_verdict = "challenge" if answer.mitigated else "deny"
        ctx.finished_at = answer.finished_at or time.perf_counter()
        status = answer.status
        if kind == "ok" and status >= 400:
            kind = "error"
        record = RequestRecord.of(ctx, Outcome(kind, status), self.component)
        etype, code = answer.error()
        if code is None and answer.ray is not None:
            etype, code = "access_denied", "challenge_required" if answer.mitigated else "1020"
        if code is not None:
            record.error_type, record.error_code = etype, code
            record.error_class = error_class(status, code, kind)
        record.key_id = state.get("admin_key_id") or record.key_id
        self.telemetry.write(record)


def endpoint_of(scope: Scope) -> str:
    """The route's template (``admin/v1/orgs/{org}``) when the app routed the request; else
    the first segment of the path (``admin``), so endpoints stay a bounded set."""
    path: str = scope["path"]
    if scope.get("route") is None:
        return path.split("/", 2)[1]
    for name, value in reversed(list((scope.get("path_params") or {}).items())):
        head, found, tail = path.rpartition(f"/{value}")
        if found and value != "":
            path = f"{head}/{{{name}}}{tail}"
    return path.lstrip("/")


class _Answer:
    """What the app sent: status, the edge's headers, and (for errors) the start of the body."""

    __slots__ = ("body", "done", "finished_at", "gone", "json", "mitigated", "ray", "status")

    def __init__(self) -> None:
        self.status = 500  # until the app starts an answer
        self.ray: str | None = None
        self.mitigated = False
        self.json = False
        self.body = b""
        self.done = self.gone = False
        self.finished_at: float | None = None

    def see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                name = name.lower()
                if name == b"gatehouse-ray":
                    self.ray = value.decode("latin-1")
                elif name == b"gatehouse-mitigated":
                    self.mitigated = True
                elif name == b"content-type":
                    self.json = value.startswith(b"application/json")
        elif message["type"] == "http.response.body":
            if self.status >= 400 and self.json and len(self.body) < BODY_KEPT:
                self.body += message.get("body", b"")
            if not message.get("more_body"):
                self.done = True
                self.finished_at = time.perf_counter()

    def error(self) -> tuple[str | None, str | None]:
        if not self.body:
            return None, None
        try:
            found: Any = orjson.loads(self.body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return None, None
        if not isinstance(found, dict):
            return None, None
        etype, code = found.get("type"), found.get("code")
        return (etype if isinstance(etype, str) else None,
                str(code) if code is not None else None)
