"""The schema stage: read the body (bounded), parse it, check it, resolve the model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from gatehouse.config import RequestLimits
from gatehouse.context import RequestContext
from gatehouse.errors import (
    ClientClosedRequest,
    InvalidRequest,
    ModelNotFound,
    RequestTooLarge,
)
from gatehouse.schema.bodies import CHECKERS, DEFAULTS
from gatehouse.schema.checks import nesting, too_deep
from gatehouse.schema.multipart import upload_model

UPLOADS = frozenset({"audio.transcriptions", "audio.translations"})
UPLOAD_NOTE = "schema.upload"  # (the multipart body, its content type)
# a body this large takes a millisecond or more to parse (~17 ms a MB of small objects), as
# much again to count its containers and to check its fields: the loop serves others between
# the three, so one large body holds it for the longest of them, not for their sum
PAUSE_ABOVE = 256 * 1024


async def read_body(ctx: RequestContext, limit: int) -> bytes:
    declared = ctx.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number.",
                                 param="Content-Length") from None
        if size > limit:
            raise RequestTooLarge(_too_large(size, limit))
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await ctx.receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest("The client went away before sending the whole body.")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise RequestTooLarge(_too_large(total, limit))
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (f"The request body is {'at least ' if size > limit else ''}{size:,} bytes; this "
            f"gateway accepts at most {limit:,} bytes.")


def parse_json(raw: bytes, content_type: str, max_depth: int = DEFAULTS.max_json_depth,
               content_encoding: str = "",
               max_containers: int = DEFAULTS.max_json_containers) -> dict[str, Any]:
    """The body as a JSON object no deeper than ``max_depth``, of at most ``max_containers``
    arrays and objects, or a 400."""
    body = load_json(raw, content_type, max_depth, content_encoding)
    check_nesting(raw, body, max_depth, max_containers)
    return body


def load_json(raw: bytes, content_type: str, max_depth: int = DEFAULTS.max_json_depth,
              content_encoding: str = "") -> dict[str, Any]:
    """The body as a JSON object, or a 400 (its nesting not checked yet)."""
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.",
                             code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("depth limit"):  # orjson stops at 1024 levels
            raise too_deep(None, max_depth) from None
        encoding = content_encoding.strip().lower()
        hint = (f" (its Content-Encoding is {encoding}: this gateway reads request bodies "
                "uncompressed; send the JSON as it is)" if encoding not in ("", "identity")
                else "" if "json" in content_type
                else " (send it with Content-Type: application/json)")
        raise InvalidRequest(f"We could not parse the JSON body of your request{hint}: {exc}.",
                             code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def check_nesting(raw: bytes, body: dict[str, Any], max_depth: int,
                  max_containers: int) -> None:
    """A 400 when ``body`` (parsed from ``raw``) nests deeper than ``max_depth`` or holds more
    than ``max_containers`` arrays and objects."""
    if raw.count(b"[") + raw.count(b"{") > max_depth:  # else it cannot nest that deep (nor
        nesting(body, max_depth, max_containers)       # hold more: max_depth < max_containers)


class SchemaStage:
    name = "schema"

    def __init__(self, max_body_bytes: int, model_exists: Callable[[str], bool],
                 limits: RequestLimits = DEFAULTS) -> None:
        self.max_body_bytes = max_body_bytes
        self.model_exists = model_exists
        self.limits = limits

    async def enter(self, ctx: RequestContext) -> None:
        if ctx.endpoint in UPLOADS:
            return await self._upload(ctx)
        raw = await read_body(ctx, self.max_body_bytes)
        limits, large = self.limits, len(raw) > PAUSE_ABOVE
        body = load_json(raw, ctx.headers.get("content-type", ""), limits.max_json_depth,
                         ctx.headers.get("content-encoding", ""))
        if large:
            await asyncio.sleep(0)
        check_nesting(raw, body, limits.max_json_depth, limits.max_json_containers)
        if large:
            await asyncio.sleep(0)
        CHECKERS[ctx.endpoint](body, limits)
        model: str = body["model"]
        self._served(model)
        ctx.body = body
        ctx.model = model
        ctx.stream = body.get("stream") is True
        options = body.get("stream_options") or {}
        ctx.include_usage = ctx.stream and options.get("include_usage") is True

    def _served(self, model: str) -> None:
        if not self.model_exists(model):
            raise ModelNotFound(f"The model `{model}` does not exist or you do not have access "
                                "to it.", param="model")

    async def _upload(self, ctx: RequestContext) -> None:
        """A multipart upload: read whole (bounded), routed by its ``model`` field."""
        raw = await read_body(ctx, self.limits.max_audio_bytes)
        content_type = ctx.headers.get("content-type", "")
        model = upload_model(raw, content_type)
        self._served(model)
        ctx.body, ctx.model = {"model": model}, model
        ctx.notes[UPLOAD_NOTE] = (raw, content_type)

    async def exit(self, ctx: RequestContext, outcome: Any) -> None:
        return None
