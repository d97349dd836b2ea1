"""Watching an SSE stream as it passes: take the usage, drop what the client did not ask for.

Complete events are passed on as soon as their blank line arrives; only an event cut in half
by the network waits for its other half. The usage chunk the gateway asked for on the client's
behalf (``stream_options.include_usage``) is metered and not forwarded."""

from __future__ import annotations

import orjson

from gatehouse.context import Usage


class StreamTap:
    __slots__ = ("drop_usage_chunk", "usage", "_pending", "done")

    def __init__(self, drop_usage_chunk: bool) -> None:
        self.drop_usage_chunk = drop_usage_chunk
        self.usage: Usage | None = None
        self._pending = b""
        self.done = False  # the [DONE] sentinel was seen

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
        if b'"usage":{' not in complete and b'"usage": {' not in complete:
            if b"[DONE]" in complete:
                self.done = True
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if b'"usage"' in event:
                if self._take_usage(event) and self.drop_usage_chunk:
                    continue
            elif b"[DONE]" in event:
                self.done = True
            out.append(event + b"\n\n")
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _take_usage(self, event: bytes) -> bool:
        """Record usage from ``event``; True when it is a usage-only chunk (no choices)."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                payload = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return False
            if not isinstance(payload, dict):
                return False
            usage = Usage.from_openai(payload.get("usage"))
            if usage is not None:
                self.usage = usage
                return not payload.get("choices")
        return False
