"""Watching an SSE stream as it passes: take the usage, drop what the client did not ask for.

Complete events are passed on as soon as their blank line arrives; only an event cut in half
by the network waits for its other half. The usage the gateway asked for on the client's
behalf (``stream_options.include_usage``) is metered and not forwarded — a usage-only chunk is
dropped, usage on a chunk with choices is taken off it. The tap also tells a
complete stream (``data: [DONE]``, or a ``finish_reason`` from backends that send no
``[DONE]``) from one that was cut off, and keeps the text it passed on (``texts``), so the
gateway can count a completion whose backend reports no usage, or that the client left.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gatehouse.context import Usage
from gatehouse.upstream.failures import Broken

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
_DONE = re.compile(rb"(?:^|\n)data: ?\[DONE\]\s*$")


KEEP_CHARS = 1_000_000  # of completion text kept for counting; beyond, only its length
# and in at most this many pieces (a streamed delta each, ~50 bytes of object apiece): an
# answer in tiny deltas would otherwise hold ~10× its text in memory (≤ ~4 MB a stream)
KEEP_PIECES = 65_536
_TEXT = re.compile(rb'"(?:content|text|arguments|reasoning_content)"\s*:\s*"')


RAW_LIMIT = 4 << 20  # bytes of events held unread before their text is taken out
# the largest one event may be (a streamed image's partial picture is a few MB); a backend
# sending an event without end is cut off there, not held until memory runs out
MAX_EVENT = 16 << 20


class StreamTap:
    __slots__ = ("_cr", "_more_chars", "_pending", "_pending_size", "_raw", "_raw_size",
                 "_texts", "done", "drop_usage_chunk", "finished", "kept", "usage")

    def __init__(self, drop_usage_chunk: bool) -> None:
        self.drop_usage_chunk = drop_usage_chunk
        self.usage: Usage | None = None
        self._texts: list[str] = []  # the completion text passed on, as it came
        self.kept = 0  # characters in texts
        self._more_chars = 0  # characters passed on beyond KEEP_CHARS (not kept)
        # events with text, as passed on: their JSON is read only if the text is asked for
        # (a backend that reports no usage, a stream cut short) — most streams end with
        # usage, and reading every chunk's JSON cost ~4 % of a streamed request's CPU
        self._raw: list[bytes] = []
        self._raw_size = 0
        self._pending: list[bytes] = []  # the start of an event still to be completed
        self._pending_size = 0
        self._cr = False  # the last piece ended in "\r", held back: its "\n" may come next
        self.done = False  # the data: [DONE] sentinel was seen
        self.finished = False  # some choice reported a finish_reason

    @property
    def complete(self) -> bool:
        return self.done or self.finished

    @property
    def texts(self) -> list[str]:
        """The completion text passed on, as it came (up to ``KEEP_CHARS`` characters in
        ``KEEP_PIECES`` pieces)."""
        self._read_raw()
        return self._texts

    @property
    def more_chars(self) -> int:
        """Characters passed on beyond ``KEEP_CHARS`` or ``KEEP_PIECES``, not kept."""
        self._read_raw()
        return self._more_chars

    def _read_raw(self) -> None:
        raw, self._raw, self._raw_size = self._raw, [], 0
        for complete in raw:
            self._keep_text(complete)

    def complete_events(self, data: bytes) -> bytes:
        """The complete events so far (``data`` after what was pending); the rest is kept.
        Each piece is searched once, and what is pending is joined only when its event ends:
        an event arriving in many pieces costs linear time, not a copy of all of it per
        piece. One event past ``MAX_EVENT`` bytes is :class:`Broken`."""
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):  # a "\r\n" may be cut between two pieces
            data = data[:-1]
            self._cr = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        pending = self._pending
        end = data.rfind(b"\n\n")
        if end >= 0:
            cut = end + 2
        elif data[:1] == b"\n" and pending and pending[-1][-1:] == b"\n":
            cut = 1  # the blank line falls between the pending part and this piece
        else:
            if data:
                pending.append(data)
                self._pending_size += len(data)
                self._check_size()
            return b""
        done = b"".join([*pending, data[:cut]]) if pending else data[:cut]
        rest = data[cut:]
        self._pending = [rest] if rest else []
        self._pending_size = len(rest)
        self._check_size()
        return done

    def _check_size(self) -> None:
        if self._pending_size > MAX_EVENT:
            raise Broken(f"sent an event of more than {MAX_EVENT:,} bytes")

    def feed(self, data: bytes) -> bytes:
        complete = self.complete_events(data)
        if not complete:
            return b""
        if _TEXT.search(complete):
            self._raw.append(complete)
            self._raw_size += len(complete)
            if self._raw_size > RAW_LIMIT:  # bounded: read what is held, keep its text
                self._read_raw()
        if not self.finished and _FINISH.search(complete):
            self.finished = True
        if _USAGE.search(complete) is None:
            if not self.done and b"[DONE]" in complete:
                self.done = any(_DONE.search(e) for e in complete.split(b"\n\n") if e)
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if _USAGE.search(event):
                payload = self._take_usage(event)
                if payload is not None and self.drop_usage_chunk:
                    if not payload.get("choices"):
                        continue  # the usage-only chunk we asked for on the client's behalf
                    # some backends (LiteLLM) put it on the last chunk with choices instead:
                    # pass the choices on, without the usage nobody asked for
                    del payload["usage"]
                    event = b"data: " + orjson.dumps(payload)
            elif b"[DONE]" in event and _DONE.search(event):
                self.done = True
            out.append(event + b"\n\n")
        return b"".join(out)

    def flush(self) -> bytes:
        """The stream ended: pass on a last event that lacked its blank line, completed."""
        rest = b"".join(self._pending) + (b"\r" if self._cr else b"")
        self._pending, self._pending_size, self._cr = [], 0, False
        if not rest.strip():
            return b""
        return self.feed(rest.rstrip(b"\n") + b"\n\n")

    def _keep_text(self, complete: bytes) -> None:
        for event in complete.split(b"\n\n"):
            if not _TEXT.search(event):
                continue
            payload = payload_of(event)
            choices = payload.get("choices") if payload is not None else None
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if isinstance(choice, dict):
                    self._keep_choice(choice)

    def _keep_choice(self, choice: dict[str, Any]) -> None:
        self.keep(choice_texts(choice))

    def keep(self, texts: list[str]) -> None:
        for text in texts:
            if self.kept + len(text) <= KEEP_CHARS and len(self._texts) < KEEP_PIECES:
                self._texts.append(text)
                self.kept += len(text)
            else:
                self._more_chars += len(text)

    def _take_usage(self, event: bytes) -> dict[str, Any] | None:
        """Record usage from ``event``; its payload when it carried usage, else None."""
        payload = payload_of(event)
        if payload is None:
            return None
        usage = Usage.from_openai(payload.get("usage"))
        if usage is None:
            return None
        self.usage = usage
        return payload


def payload_of(event: bytes) -> dict[str, Any] | None:
    """An event's JSON object, or None (no data, not JSON, not an object)."""
    data = [line[5:].removeprefix(b" ") for line in event.split(b"\n")
            if line.startswith(b"data:")]
    if not data:
        return None
    try:
        payload = orjson.loads(b"\n".join(data))
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def choice_texts(choice: dict[str, Any]) -> list[str]:
    """The generated text in one choice of a chunk (``delta``) or a whole answer
    (``message``): content, reasoning, tool call arguments; a completion's ``text``."""
    found: list[Any] = [choice.get("text")]
    said = choice.get("delta") or choice.get("message")
    if isinstance(said, dict):
        found += (said.get("content"), said.get("reasoning_content"))
        calls = said.get("tool_calls")
        if isinstance(calls, list):
            found += [c["function"].get("arguments") for c in calls
                      if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    return [t for t in found if isinstance(t, str) and t]
