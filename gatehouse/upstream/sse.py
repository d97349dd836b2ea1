"""Watching an SSE stream as it passes: take the usage, drop what the client did not ask for.

Complete events are passed on as soon as their blank line arrives; only an event cut in half
by the network waits for its other half. The usage the gateway asked for on the client's
behalf (``stream_options.include_usage``) is metered and not forwarded — a usage-only chunk is
dropped, usage on a chunk with choices is taken off it. The tap also tells a
complete stream (``data: [DONE]``, or a ``finish_reason`` from backends that send no
``[DONE]``) from one that was cut off.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gatehouse.context import Usage

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
_DONE = re.compile(rb"(?:^|\n)data: ?\[DONE\]\s*$")


class StreamTap:
    __slots__ = ("_pending", "done", "drop_usage_chunk", "finished", "usage")

    def __init__(self, drop_usage_chunk: bool) -> None:
        self.drop_usage_chunk = drop_usage_chunk
        self.usage: Usage | None = None
        self._pending = b""
        self.done = False  # the data: [DONE] sentinel was seen
        self.finished = False  # some choice reported a finish_reason

    @property
    def complete(self) -> bool:
        return self.done or self.finished

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            data = self._pending + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        self._pending = data[end + 2:]
        complete = data[:end + 2]
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
        rest, self._pending = self._pending, b""
        if not rest.strip():
            return b""
        return self.feed(rest.rstrip(b"\n") + b"\n\n")

    def _take_usage(self, event: bytes) -> dict[str, Any] | None:
        """Record usage from ``event``; its payload when it carried usage, else None."""
        data = [line[5:].removeprefix(b" ") for line in event.split(b"\n")
                if line.startswith(b"data:")]
        if not data:
            return None
        try:
            payload = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict):
            return None
        usage = Usage.from_openai(payload.get("usage"))
        if usage is None:
            return None
        self.usage = usage
        return payload
