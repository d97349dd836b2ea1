"""Answers being generated for the chat, kept apart from the browser that asked.

The pipeline's stream is read to its end by a task of its own (so the stages' exits — quota
settlement, admission's slot, telemetry — run when the answer really ends), and the text so far
lives in a :class:`Generation` that any number of page connections follow, from any offset
(``Last-Event-ID``). Closing the tab ends only the following; the stop button cancels the task.
A generation lives in the replica that runs it; the store has its text at most
``SAVE_EVERY`` seconds behind. Another replica follows it by reading the store at that
interval (:func:`follow_stored`: one small query a second per follower, ended by the answer's
end, its staleness or ``MAX_POLLS``), and a stop sent to another replica is published on the
state layer (``chat.stop``, as key revocations are) to the one generating it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson

from gatehouse.state.base import State
from gatehouse.store.tables import ChatMessage

log = logging.getLogger("gatehouse.web.chat")

SAVE_EVERY = 1.0  # seconds between saves of an answer while it streams
MAX_LINE = 1 << 20  # an SSE line longer than this from the pipeline is cut off (bounded buffer)
MAX_POLLS = 3600  # a follower on another replica reads the store at most this many times
STOP_CHANNEL = "chat.stop"


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

    def stop(self) -> None:
        """End the answer early; once: a second cancel would cut short the exits that save
        it."""
        if not self.stopped and self.task is not None:
            self.stopped = True
            self.task.cancel()

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

    def __init__(self, state: State | None = None) -> None:
        self.live: dict[str, Generation] = {}
        self.state = state

    async def start(self) -> None:
        if self.state is not None:
            self.state.subscribe(STOP_CHANNEL, self._heard)

    def get(self, user_id: str, message_id: str) -> Generation | None:
        gen = self.live.get(message_id)
        return gen if gen is not None and gen.user_id == user_id else None

    async def stop_elsewhere(self, user_id: str, message_id: str) -> None:
        """Ask every replica to stop this answer (the one generating it does)."""
        if self.state is not None:
            await self.state.publish(STOP_CHANNEL, f"{user_id} {message_id}".encode())

    def _heard(self, message: bytes | None) -> None:
        if message is None:  # a lost stop cannot be found again; the person may press again
            return
        user_id, _, message_id = message.decode(errors="replace").partition(" ")
        gen = self.get(user_id, message_id)
        if gen is not None:
            gen.stop()

    async def aclose(self) -> None:
        """At shutdown: stop every answer (each is saved as incomplete by its exits)."""
        tasks = [g.task for g in self.live.values() if g.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


Reader = Callable[[], Awaitable[ChatMessage | None]]
Shown = Callable[[ChatMessage], tuple[str, dict[str, Any] | None]]


async def follow_stored(read: Reader, shown: Shown, start: int, first: ChatMessage,
                        every: float = SAVE_EVERY) -> AsyncGenerator[bytes, None]:
    """SSE events of an answer generated elsewhere, from the store: what was saved after
    ``start``, again every ``every`` seconds while it is streaming (``shown`` gives its
    status as the page sees it: a stale one is incomplete), then its end."""
    message: ChatMessage | None = first
    sent = start
    for _ in range(MAX_POLLS):
        if message is None:  # deleted meanwhile
            yield event("end", {"status": "stopped", "view": None}, sent)
            return
        if len(message.content) > sent:
            yield event("delta", {"text": message.content[sent:]}, len(message.content))
            sent = len(message.content)
        status, view = shown(message)
        if status != "streaming":
            yield event("end", {"status": status, "view": view}, sent)
            return
        await asyncio.sleep(every)
        message = await read()
    yield event("end", {"status": "incomplete", "view": None}, sent)
