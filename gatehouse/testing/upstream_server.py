"""A small OpenAI-compatible server for tests and benchmarks.

It stands in for vLLM / Ollama / OpenAI on 127.0.0.1 and can be told to misbehave:

    python -m gatehouse.testing.upstream_server --port 9001 --name a

Behaviour is steered at run time through a control endpoint, so one process can be healthy,
then fail, then stall, within one test::

    POST /_control {"status": 503, "times": 2}        next 2 requests answer 503
    POST /_control {"first_byte_ms": 3000}             hold every response 3 s before headers
    POST /_control {"fail_after_chunks": 2}            streams send 2 chunks, then drop the socket
    POST /_control {"ms_per_token": 20}                pace streamed tokens
    POST /_control {"poison": "json_schema"}           requests whose body contains the string
                                                       answer 500 (``poison_status``), the rest
                                                       as usual — as llama.cpp does with some
                                                       ``response_format`` requests
    POST /_control {"uuid_request_ids": true}          refuse an x-request-id that is not a UUID
                                                       with 400 and an empty body — as
                                                       llama-cpp-python's server does
    POST /_control {"status": 400, "raw_error": "..."} answer errors with this plain text
    POST /_control {"linger_after_done_ms": 3000}      streams stay open 3 s after [DONE]
    POST /_control {"usage_on_last_choice": true}      usage on the finish chunk, asked or not
    POST /_control {"set_cookie": "sid=abc; Path=/"}     answers carry this Set-Cookie header
    POST /_control {"raw_answer": {"status": 200, "content_type": "text/html", "body": "<p>"}}
                                                       every model request, stream or not, is
                                                       answered exactly this (a misconfigured
                                                       proxy's page, a redirect, an empty 204)
    POST /_control {"tool_call": {"name": "f", "arguments": "{}"}}
                                                       chat answers call that tool instead
    POST /_reset                                       back to healthy, counters kept
    GET  /_stats                                       {"requests", "streams_completed", ...}

With ``--responses`` it speaks the Responses API too, storing what it answers
(responses_upstream.py); without, it is a chat-only backend and /v1/responses is a 404.

Replies are deterministic: ``reply_tokens`` words (default 8, capped by ``max_tokens``), the
first one naming the server (``--name``) so a test can see which backend answered.
Embeddings are 8 numbers per input, or ``dimensions`` (up to 3,072) full-precision ones, so a
test or benchmark can ask for an answer as large as OpenAI's largest (2,048 inputs × 3,072:
~125 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatehouse.schema.multipart import form_value
from gatehouse.testing.responses_upstream import StoredResponses

Scope = dict[str, Any]
MAX_DIMENSIONS = 3072  # text-embedding-3-large's
OTHER = ("/v1/moderations", "/v1/images/generations", "/v1/audio/speech")


@dataclass
class Behaviour:
    status: int = 200
    times: int | None = None  # how many requests the failure applies to; None = until reset
    first_byte_ms: float = 0.0
    ms_per_token: float = 0.0
    fail_after_chunks: int | None = None
    reply_tokens: int = 8
    omit_usage: bool = False
    poison: str | None = None  # requests whose raw body contains this fail, the others do not
    poison_status: int = 500
    uuid_request_ids: bool = False
    linger_after_done_ms: float = 0.0  # keep a stream open this long after [DONE]
    usage_on_last_choice: bool = False  # usage on the finish chunk, even unasked (LiteLLM)
    raw_error: str | None = None  # error answers as this text/plain body instead of JSON
    tool_call: dict[str, str] | None = None  # chat answers call this tool (name, arguments)
    set_cookie: str | None = None  # JSON answers carry this Set-Cookie header
    raw_answer: dict[str, Any] | None = None  # {"status", "content_type", "body"}: sent as is


@dataclass
class Stats:
    requests: int = 0
    active: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    last_headers: dict[str, str] = field(default_factory=dict)  # of the last model request
    last_body: Any = None  # the last model request's JSON body


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += count_tokens(content) + 3
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += count_tokens(part["text"])
            total += 3
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        total += count_tokens(prompt)
    return max(total, 1)


class UpstreamServer:
    def __init__(self, name: str, behaviour: Behaviour | None = None,
                 responses: bool = False) -> None:
        self.name = name
        self.responses = StoredResponses(name) if responses else None
        self.default = behaviour or Behaviour()
        self.behaviour = Behaviour(**vars(self.default))
        self.stats = Stats()

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/_control":
            for key, value in orjson.loads(body or b"{}").items():
                setattr(self.behaviour, key, value)
            return await self._json(send, 200, {"ok": True})
        if path == "/_reset":
            self.behaviour = Behaviour(**vars(self.default))
            return await self._json(send, 200, {"ok": True})
        if path == "/_stats":
            return await self._json(send, 200, vars(self.stats))

        self.stats.requests += 1
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        self.stats.last_headers = {k.decode("latin-1"): v.decode("latin-1")
                                   for k, v in scope["headers"]}
        self.stats.active += 1
        try:
            await self._serve(path, scope, body, receive, send)
        finally:
            self.stats.active -= 1

    async def _serve(self, path: str, scope: Scope, raw: bytes, receive: Any, send: Any) -> None:
        b = self.behaviour
        if b.uuid_request_ids:
            given = dict(scope["headers"]).get(b"x-request-id")
            try:
                if given is not None:
                    uuid.UUID(given.decode("latin-1"))
            except ValueError:
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        if b.first_byte_ms:
            await asyncio.sleep(b.first_byte_ms / 1000)
        if b.poison is not None and b.poison.encode() in raw:
            return await self._json(send, b.poison_status, {"error": {
                "message": f"upstream {self.name} cannot serve this request",
                "type": "server_error", "param": None, "code": b.poison_status}})
        if b.status != 200:
            if b.times is not None:
                b.times -= 1
                if b.times <= 0:
                    self.behaviour = Behaviour(**vars(self.default))
            if b.raw_error is not None:
                plain = b.raw_error.encode()
                await send({"type": "http.response.start", "status": b.status, "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(plain)).encode())]})
                await send({"type": "http.response.body", "body": plain})
                return
            return await self._json(
                send,
                b.status,
                {"error": {"message": f"upstream {self.name} failing on purpose",
                           "type": "server_error", "param": None, "code": None}},
            )
        if b.raw_answer is not None and path != "/v1/models":
            raw_body = str(b.raw_answer.get("body", "")).encode()
            await send({"type": "http.response.start", "status": int(b.raw_answer["status"]),
                        "headers": [(b"content-type", str(b.raw_answer.get(
                            "content_type", "text/plain")).encode()),
                            (b"content-length", str(len(raw_body)).encode())]})
            await send({"type": "http.response.body", "body": raw_body})
            return None
        if path == "/v1/models" and scope["method"] == "GET":
            return await self._json(send, 200, {"object": "list", "data": [
                {"id": "test-model", "object": "model", "created": 0, "owned_by": self.name}]})
        if path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            kind = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            model = form_value(raw, kind, "model")
            return await self._json(send, 200, {
                "text": f"{self.name} heard {len(raw)} bytes for {model}"})
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return await self._json(send, 400, {"error": {
                "message": "bad json", "type": "invalid_request_error", "param": None, "code": None}})
        self.stats.last_body = body
        if self.responses is not None and path.startswith("/v1/responses"):
            status, answer = self.responses.create(body, raw) if path == "/v1/responses" \
                else self.responses.read(scope["method"], path)
            if isinstance(answer, bytes):
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]})
                await send({"type": "http.response.body", "body": answer})
                return None
            return await self._json(send, status, answer)
        if path == "/v1/embeddings":
            return await self._embeddings(send, body)
        if path in OTHER:
            return await self._other(send, path, body)
        if path not in ("/v1/chat/completions", "/v1/completions"):
            return await self._json(send, 404, {"error": {
                "message": f"no route {path}", "type": "invalid_request_error",
                "param": None, "code": None}})
        chat = path == "/v1/chat/completions"
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or b.reply_tokens
        words = [self.name] + [f"w{i}" for i in range(1, min(b.reply_tokens, limit))]
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": len(words),
                 "total_tokens": prompt_tokens(body) + len(words)}
        model = body.get("model", "test-model")
        rid = "chatcmpl-" + hashlib.sha1(raw).hexdigest()[:16]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(send, receive, chat, rid, model, words,
                                      usage if include_usage and not b.omit_usage else None)
        text = " ".join(words)
        if chat and b.tool_call is not None:
            choice: dict[str, Any] = {"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_" + rid[9:], "type": "function", "function": b.tool_call}]}}
        elif chat:
            choice = {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}
        payload: dict[str, Any] = {
            "id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}
        if not b.omit_usage:
            payload["usage"] = usage
        await self._json(send, 200, payload)

    async def _stream(self, send: Any, receive: Any, chat: bool, rid: str, model: str,
                      words: list[str], usage: dict[str, int] | None) -> None:
        b = self.behaviour
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"x-upstream-name", self.name.encode())]})
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        sent = 0
        # after the body, the next receive() only ever reports the client going away
        gone = asyncio.ensure_future(receive())
        try:
            for i, word in enumerate(words):
                if gone.done():
                    raise ConnectionResetError("the client went away mid-stream")
                if b.fail_after_chunks is not None and sent >= b.fail_after_chunks:
                    raise ConnectionAbortedError("dropping the stream on purpose")
                if b.ms_per_token and i:
                    await asyncio.sleep(b.ms_per_token / 1000)
                piece = word if i == 0 else " " + word
                if chat and b.tool_call is not None:  # the call's arguments, in two pieces
                    if i > 1:
                        break
                    half = len(b.tool_call["arguments"]) // 2
                    call: dict[str, Any] = {"index": 0, "function": {
                        "arguments": b.tool_call["arguments"][half * i:] if i else
                        b.tool_call["arguments"][:half]}}
                    if i == 0:
                        call.update(id="call_" + rid[9:], type="function")
                        call["function"]["name"] = b.tool_call["name"]
                    delta: dict[str, Any] = {"tool_calls": [call]}
                else:
                    delta = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                if chat:
                    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                else:
                    choice = {"index": 0, "text": piece, "finish_reason": None}
                chunk: dict[str, Any] = {"id": rid, "object": obj, "created": created,
                                         "model": model, "choices": [choice]}
                if usage is not None:
                    chunk["usage"] = None
                await send({"type": "http.response.body",
                            "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
                sent += 1
            last: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": model,
                                    "choices": [{"index": 0, "delta": {}, "finish_reason":
                                                 "tool_calls" if b.tool_call else "stop"}
                                                if chat else
                                                {"index": 0, "text": "", "finish_reason": "stop"}]}
            if b.usage_on_last_choice and usage is not None:
                last["usage"] = usage  # LiteLLM's shape: usage rides on the finish chunk
                usage = None
            tail = b"data: " + orjson.dumps(last) + b"\n\n"
            if usage is not None:
                tail += b"data: " + orjson.dumps({"id": rid, "object": obj, "created": created,
                                                  "model": model, "choices": [],
                                                  "usage": usage}) + b"\n\n"
            if b.linger_after_done_ms:  # [DONE], then the connection held open a while
                await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n",
                            "more_body": True})
                await asyncio.sleep(b.linger_after_done_ms / 1000)
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
            self.stats.streams_completed += 1
        except (OSError, asyncio.CancelledError):
            # a dropped client (the gateway closing the stream) or a drop on purpose
            self.stats.streams_aborted += 1
            raise
        finally:
            gone.cancel()

    async def _embeddings(self, send: Any, body: dict[str, Any]) -> None:
        items = body.get("input")
        inputs = items if isinstance(items, list) else [items]
        dimensions = body.get("dimensions")
        wide = dimensions if isinstance(dimensions, int) and 0 < dimensions <= MAX_DIMENSIONS \
            else None
        data = []
        for i, item in enumerate(inputs):
            data.append({"object": "embedding", "index": i,
                         "embedding": _vector(str(item), wide)})
        tokens = sum(count_tokens(str(item)) for item in inputs)
        await self._json(send, 200, {"object": "list", "data": data,
                                     "model": body.get("model", "test-model"),
                                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _other(self, send: Any, path: str, body: dict[str, Any]) -> None:
        """Moderations, image generation and speech: small fixed answers in OpenAI's shapes."""
        model = body.get("model", "test-model")
        if path == "/v1/audio/speech":  # a few bytes of "audio", named after the server
            audio = b"ID3" + self.name.encode() + str(body.get("input", "")).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"audio/mpeg"), (b"content-length", str(len(audio)).encode())]})
            await send({"type": "http.response.body", "body": audio})
            return
        if path == "/v1/moderations":
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            return await self._json(send, 200, {"id": f"modr-{self.name}", "model": model,
                                                "results": [{"flagged": False, "categories": {},
                                                             "category_scores": {}}] * count})
        await self._json(send, 200, {"created": int(time.time()), "data": [
            {"b64_json": "aW1hZ2U=", "revised_prompt": body.get("prompt")}] *
            (body.get("n") or 1)})

    async def _json(self, send: Any, status: int, payload: Any) -> None:
        data = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
            (b"x-upstream-name", self.name.encode()),
            (b"x-request-id", f"{self.name}-{self.stats.requests}".encode()),
            *([(b"set-cookie", self.behaviour.set_cookie.encode())]
              if self.behaviour.set_cookie else [])]})
        await send({"type": "http.response.body", "body": data})


@functools.lru_cache(maxsize=64)
def _vector(text: str, dimensions: int | None) -> list[float]:
    """An input's embedding: 8 short numbers, or (asked ``dimensions``, as OpenAI's
    text-embedding-3 models take) that many full-precision ones, as large on the wire as a
    real model's (~20 characters each)."""
    digest = hashlib.sha256(text.encode()).digest()
    if dimensions is None:
        return [round((byte - 128) / 128, 4) for byte in digest[:8]]
    rng = random.Random(digest)
    return [rng.uniform(-0.1, 0.1) for _ in range(dimensions)]


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--ms-per-token", type=float, default=0.0)
    parser.add_argument("--reply-tokens", type=int, default=8)
    parser.add_argument("--responses", action="store_true",
                        help="speak the Responses API too, storing what it answers")
    args = parser.parse_args(argv)
    app = UpstreamServer(args.name, Behaviour(status=args.status, ms_per_token=args.ms_per_token,
                                              reply_tokens=args.reply_tokens),
                         responses=args.responses)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="on")


if __name__ == "__main__":
    main()
