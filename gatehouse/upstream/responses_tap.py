"""Watching a Responses API stream as it passes from a backend that speaks it natively.

Every event is passed on unchanged. The tap takes the usage from the terminal event
(``response.completed``, ``response.incomplete`` or ``response.failed``), which is also the
stream's end — Responses streams send no ``[DONE]`` — keeps the generated text of the delta
events (so a stream without usage, or one the client left, is counted by the gateway), and
remembers the response as created and the last sequence number, so a stream that breaks can
still end with a well-formed ``response.failed``."""

from __future__ import annotations

import re
from typing import Any

from gatehouse.context import Usage
from gatehouse.upstream.sse import StreamTap, payload_of

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_DELTA = re.compile(rb'"type"\s*:\s*"response\.(?:output_text|function_call_arguments|'
                    rb'reasoning_text|reasoning_summary_text|refusal)\.delta"')
_WATCH = re.compile(rb'"type"\s*:\s*"response\.(?:created|completed|incomplete|failed)"')
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


class ResponsesTap(StreamTap):
    __slots__ = ("response", "sequence")

    def __init__(self) -> None:
        super().__init__(False)
        self.response: dict[str, Any] | None = None  # as response.created gave it
        self.sequence = 0  # the next sequence number

    def feed(self, data: bytes) -> bytes:
        complete = self.complete_events(data)
        if not complete:
            return b""
        found = _SEQUENCE.findall(complete)
        if found:
            self.sequence = int(found[-1]) + 1
        if _DELTA.search(complete) is None and _WATCH.search(complete) is None:
            return complete
        for raw in complete.split(b"\n\n"):
            if raw and (_DELTA.search(raw) or _WATCH.search(raw)):
                self._see(payload_of(raw))
        return complete

    def _see(self, payload: dict[str, Any] | None) -> None:
        if payload is None:
            return
        kind = payload.get("type")
        if isinstance(payload.get("delta"), str):
            self.keep([payload["delta"]])
            return
        response = payload.get("response")
        if not isinstance(response, dict):
            return
        if kind == "response.created":
            self.response = response
        elif kind in TERMINAL:
            self.done = True
            self.usage = Usage.from_openai(response.get("usage")) or self.usage


def texts_of_response(data: dict[str, Any]) -> list[str]:
    """The generated text of a whole ``Response``: output text, refusals, call arguments,
    reasoning."""
    texts: list[str] = []
    for item in data.get("output") or []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):
            texts.append(item["arguments"])
        for part in item.get("content") or []:
            if isinstance(part, dict):
                said = part.get("text", part.get("refusal"))
                if isinstance(said, str):
                    texts.append(said)
    return [t for t in texts if t]
