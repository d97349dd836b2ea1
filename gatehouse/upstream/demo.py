"""The built-in ``demo`` backend: a deterministic, in-process stand-in for a model.

It is not a language model. It echoes the last user message back inside a fixed sentence so a
newcomer can see the gateway work with no upstream, and it serves the benchmarks and fault
tests: latency before the first token, time per token and a failure rate are configurable.
Token counts are real counts of the words and punctuation it reads and writes.

It runs inside the gateway's event loop, so no request may make it do much: a reply is at
most ``reply_tokens`` (≤ 4096) tokens, an echo at most 2,000 characters, and an embeddings
answer at most ``MAX_VALUES`` numbers (inputs × dimensions), each input hashed once — the
largest answer costs a few tens of milliseconds. More is refused with a 400, as a real
backend refuses a batch larger than it serves."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gatehouse.config import DemoSettings
from gatehouse.upstream.backend import UpstreamCall, UpstreamReply
from gatehouse.upstream.tokens import count_tokens_in, split_tokens

PREAMBLE = "This is the gatehouse demo backend, not a language model. You said:"
# numbers in one embeddings answer: 2,048 inputs of the default 64 dimensions, or 8 of
# 16,384; ~2.7 MB of JSON and ~50 ms of CPU at most
MAX_VALUES = 2048 * 64
# (Responses requests reach it as chat completions, translated by the gateway's bridge)
SERVED = frozenset({"chat.completions", "completions", "embeddings"})
_LEVELS = [(b - 127.5) / 127.5 for b in range(256)]


class _DemoReply:
    def __init__(self, status: int, body: bytes = b"",
                 stream: AsyncIterator[bytes] | None = None) -> None:
        self.status = status
        self.content_type = "text/event-stream" if stream else "application/json"
        self.retry_after: str | None = None
        self.request_id: str | None = None
        self._body = body
        self._stream = stream

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._stream is None:
            yield self._body
            return
        async for chunk in self._stream:
            yield chunk

    def close(self) -> None:
        return None

    def finish(self) -> None:
        self.close()


def _prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """The text to echo (last user message, or the prompt) and the prompt's token count."""
    texts, last = [], ""
    messages = body.get("messages") or []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else " ".join(
            part["text"] for part in content or []
            if isinstance(part, dict) and isinstance(part.get("text"), str))
        texts.append(text)
        if message.get("role") == "user":
            last = text
    tokens = count_tokens_in(texts) + 4 * len(messages)  # role and separators
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], str)):
        prompts = [prompt] if isinstance(prompt, str) else list(map(str, prompt))
        last = " ".join(prompts)
        tokens += count_tokens_in(prompts)
    elif prompt:  # token ids: one array of them, or one array per prompt
        last = orjson.dumps(prompt)[:2000].decode(errors="ignore")
        tokens += sum(len(p) if isinstance(p, list) else 1 for p in prompt) \
            if isinstance(prompt[0], list) else len(prompt)
    return last, max(tokens, 1)


class DemoBackend:
    name = "demo"

    def __init__(self, settings: DemoSettings, seed: int | None = None) -> None:
        self.settings = settings
        self.first_byte_timeout = 60.0
        self.random = random.Random(seed)

    async def open(self, call: UpstreamCall) -> UpstreamReply:
        s = self.settings
        if s.latency_ms:
            await asyncio.sleep(s.latency_ms / 1000)
        if s.failure_rate and self.random.random() < s.failure_rate:
            return _DemoReply(500, orjson.dumps({"error": {
                "message": "demo backend failing on purpose (demo.failure_rate)",
                "type": "server_error", "param": None, "code": None}}))
        if call.endpoint not in SERVED:
            said = "stores no responses" if call.endpoint == "responses.stored" else \
                f"does not serve {call.endpoint}"
            return _DemoReply(404, orjson.dumps({"error": {
                "message": f"The demo backend {said}.", "type": "invalid_request_error",
                "param": None, "code": "not_found"}}))
        body = orjson.loads(call.body)
        if call.endpoint == "embeddings":
            return self._embeddings(body)
        echo, prompt_tokens = _prompt_text(body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or s.reply_tokens
        wanted = min(s.reply_tokens, limit)
        echo = echo[:2000]
        pieces = split_tokens(f"{PREAMBLE} {echo}")
        more = split_tokens(" " + echo) or [" demo"]
        while len(pieces) < wanted:
            pieces += more
        finish = "length" if limit < s.reply_tokens else "stop"
        pieces = pieces[:wanted]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        # n choices, each the same echo (bounded: the schema caps n at [limits] max_n)
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 1 else 1
        usage["completion_tokens"] *= n
        usage["total_tokens"] = prompt_tokens + usage["completion_tokens"]
        chat = call.endpoint == "chat.completions"
        rid = ("chatcmpl-" if chat else "cmpl-") + call.request_id[4:]
        model = body["model"]
        if call.stream:
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return _DemoReply(200, stream=self._stream(chat, rid, model, pieces, finish,
                                                       usage if include else None, n))
        text = "".join(pieces)
        choices: list[dict[str, Any]] = [
            {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
             "logprobs": None, "finish_reason": finish} if chat else
            {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
            for i in range(n)]
        return _DemoReply(200, orjson.dumps({
            "id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage, "system_fingerprint": "gatehouse-demo"}))

    async def _stream(self, chat: bool, rid: str, model: str, pieces: list[str], finish: str,
                      usage: dict[str, int] | None, n: int = 1) -> AsyncIterator[bytes]:
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": rid, "object": obj, "created": created, "model": model,
                "system_fingerprint": "gatehouse-demo"}
        per_token = self.settings.ms_per_token / 1000
        for i, piece in enumerate(pieces):
            if per_token and i:
                await asyncio.sleep(per_token)
            out = []
            for k in range(n):  # one chunk per choice, as OpenAI streams n > 1
                if chat:
                    delta = {"role": "assistant", "content": piece} if i == 0 \
                        else {"content": piece}
                    choice: dict[str, Any] = {"index": k, "delta": delta, "logprobs": None,
                                              "finish_reason": None}
                else:
                    choice = {"index": k, "text": piece, "logprobs": None,
                              "finish_reason": None}
                chunk = {**head, "choices": [choice]}
                if usage is not None:
                    chunk["usage"] = None
                out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
            yield b"".join(out)
        tail = b"".join(
            b"data: " + orjson.dumps({**head, "choices": [
                {"index": k, "delta": {}, "logprobs": None, "finish_reason": finish} if chat
                else {"index": k, "text": "", "logprobs": None, "finish_reason": finish}]})
            + b"\n\n" for k in range(n))
        if usage is not None:
            tail += b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
        yield tail + b"data: [DONE]\n\n"

    def _embeddings(self, body: dict[str, Any]) -> _DemoReply:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and not isinstance(inputs[0], str | list):
            inputs = [inputs]  # one input given as token ids
        size = body.get("dimensions") or 64
        if len(inputs) * size > MAX_VALUES:
            return _DemoReply(400, orjson.dumps({"error": {
                "message": f"The demo backend returns at most {MAX_VALUES:,} numbers per "
                           f"request (inputs × dimensions); {len(inputs):,} × {size:,} is "
                           f"{len(inputs) * size:,}. Send fewer inputs or fewer dimensions.",
                "type": "invalid_request_error",
                "param": "dimensions" if "dimensions" in body else "input",
                "code": "invalid_value"}}))
        tokens = count_tokens_in(i for i in inputs if isinstance(i, str)) + sum(
            len(i) for i in inputs if isinstance(i, list))
        data = []
        for i, item in enumerate(inputs):
            vector = _vector(item.encode() if isinstance(item, str) else orjson.dumps(item), size)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return _DemoReply(200, orjson.dumps({
            "object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))

    async def probe(self) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def _vector(text: bytes, size: int) -> list[float]:
    """A deterministic unit vector derived from the text (same text, same vector): one byte
    of SHAKE-256 per dimension, grown from one BLAKE2 digest of the text, so a long text is
    hashed once (and fast) whatever the size."""
    seed = hashlib.blake2b(text).digest()
    out = [_LEVELS[b] for b in hashlib.shake_256(seed).digest(size)]
    norm = math.hypot(*out) or 1.0
    return [v / norm for v in out]
