"""Answers being generated for the chat, kept apart from the browser that asked.

The pipeline's stream is read to its end by a task of its own (so the stages' exits — quota
settlement, admission's slot, telemetry — run when the answer really ends), and the text so far
lives in a :class:`Generation` that any number of page connections follow, from any offset
(``Last-Event-ID``). Closing the tab ends only the following; the stop button cancels the task.
A generation lives in the replica that runs it; the store has its text at most
``SAVE_EVERY`` seconds behind, which is what another replica (or a reload after this one
died) shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import orjson

log = logging.getLogger("gatehouse.web.chat")

SAVE_EVERY = 1.0  # seconds between saves of an answer while it streams
MAX_LINE = 1 << 20  # an SSE line longer than this from the pipeline is cut off (bounded buffer)


class Generation:
    """One answer in the making: its text so far and how it ended."""

    def __init__(self, message_id: str, conversation_id: str, user_id: str,
                 request_id: str) -> None:
        self.message_id = message_id
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.request_id = request_id
        self.text = ""
        self.finish_reason: str | None = None
        self.broken: dict[str, Any] | None = None  # the error event of a broken stream
        self.status = "streaming"
        self.view: dict[str, Any] | None = None
        self.stopped = False
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.status != "streaming"

    def add(self, piece: str) -> None:
        self.text += piece
        self._wake()

    def finish(self, status: str, view: dict[str, Any] | None) -> None:
        self.status, self.view = status, view
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, start: int = 0) -> AsyncGenerator[bytes, None]:
        """SSE events from character ``start`` on: ``delta`` events (their id is the offset
        after them), then one ``end`` event."""
        sent = max(0, min(start, len(self.text)))
        while True:
            changed = self._changed
            if len(self.text) > sent:
                piece, sent = self.text[sent:], len(self.text)
                yield event("delta", {"text": piece}, sent)
            if self.done:
                yield event("end", {"status": self.status, "view": self.view}, sent)
                return
            await changed.wait()


def event(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


class SSEReader:
    """The ``data:`` payloads of an OpenAI stream, fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()[:MAX_LINE]
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]


def apply(gen: Generation, data: bytes) -> None:
    """One ``data:`` payload of the pipeline's stream, applied to the answer."""
    if not data or data == b"[DONE]":
        return
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(chunk, dict):
        return
    if isinstance(chunk.get("error"), dict):  # the stream broke: the API's own error event
        gen.broken = chunk
        return
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            gen.add(delta["content"])
        if choice.get("finish_reason"):
            gen.finish_reason = str(choice["finish_reason"])


class Generations:
    """The generations running in this replica, by answer message id."""

    def __init__(self) -> None:
        self.live: dict[str, Generation] = {}

    def get(self, user_id: str, message_id: str) -> Generation | None:
        gen = self.live.get(message_id)
        return gen if gen is not None and gen.user_id == user_id else None

    async def aclose(self) -> None:
        """At shutdown: stop every answer (each is saved as incomplete by its exits)."""
        tasks = [g.task for g in self.live.values() if g.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
