"""The public answers — ``/status`` and ``/api/v2/*.json`` — straight from the snapshot: a
dict lookup, an ETag (``If-None-Match`` → 304) and a short ``max-age``. Answered beside the
probes, before the pipeline (like ``/healthz``): no store, no state, no edge on the way, so
they stay up while the store is down and cost next to nothing under load. JSON may be read
from any origin (``access-control-allow-origin: *``), as Statuspage's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from gatehouse.context import Reply, RequestContext
from gatehouse.htmlpage import NOSNIFF
from gatehouse.status.feeds import PATHS as FEEDS
from gatehouse.status.page import HEADERS as PAGE_HEADERS
from gatehouse.status.service import StatusService
from gatehouse.status.statuspage import DOCUMENTS

NOT_READY = orjson.dumps({"error": {
    "message": "The status page is starting and has not read the store yet; try again in a "
               "few seconds.", "type": "server_error", "param": None,
    "code": "status_unavailable"}})


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match[:1024].split(",")}
    return etag in tags or "*" in tags


def paths() -> list[str]:
    return ["/status", *FEEDS, *(f"/api/v2/{d}" for d in DOCUMENTS)]


def handlers(service: StatusService
             ) -> dict[str, Callable[[RequestContext], Awaitable[Reply]]]:
    max_age = f"public, max-age={service.settings.max_age_seconds}"

    def handler(path: str) -> Callable[[RequestContext], Awaitable[Reply]]:
        async def serve(ctx: RequestContext) -> Reply:
            snapshot = service.snapshot
            if snapshot is None:
                return Reply(503, {"content-type": "application/json", "retry-after": "5",
                                   "cache-control": "no-store", **NOSNIFF}, NOT_READY)
            found = snapshot.answers[path]
            headers = {"etag": found.etag, "cache-control": max_age,
                       "content-type": found.content_type}
            if path == "/status":
                headers = {**PAGE_HEADERS, **headers}
            else:
                headers.update(NOSNIFF)
                headers["access-control-allow-origin"] = "*"
            if matches(ctx.headers.get("if-none-match"), found.etag):
                return Reply(304, headers)
            return Reply(200, headers, found.body)

        return serve

    return {path: handler(path) for path in paths()}
