"""Responses API stream events: a chat completions stream translated as it passes, and the
events that tell a client its stream failed.

:class:`ChatToResponses` takes complete SSE events of a chat stream (the stage's tap hands
them over whole) and gives back the typed events a Responses client expects::

    response.created, response.in_progress
    per output item: response.output_item.added
        text:  response.content_part.added, response.output_text.delta …,
               response.output_text.done, response.content_part.done
        calls: response.function_call_arguments.delta …, …arguments.done
        reasoning: response.reasoning_text.delta …, response.reasoning_text.done
    response.output_item.done
    response.completed (or response.incomplete) with the usage

A stream that breaks ends with ``error`` and ``response.failed`` (:func:`failure_events`)."""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.context import Usage
from gatehouse.errors import GatehouseError
from gatehouse.upstream.responses_bridge import (
    call_item,
    ending,
    message_item,
    reasoning_item,
    skeleton,
    usage_of,
)
from gatehouse.upstream.sse import payload_of


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return usage_of({"prompt_tokens": usage.prompt_tokens,
                     "completion_tokens": usage.completion_tokens,
                     "total_tokens": usage.total_tokens}) or {}


def failure_events(error: GatehouseError, response: dict[str, Any], sequence: int,
                   request_id: str) -> bytes:
    """``error`` then ``response.failed``: what a Responses stream ends with when it breaks."""
    failed = {**response, "status": "failed",
              "error": {"code": "server_error", "message": error.message}}
    return (event("error", {"type": "error", "code": error.code, "message": error.message,
                            "param": None, "sequence_number": sequence,
                            "request_id": request_id})
            + event("response.failed", {"type": "response.failed", "response": failed,
                                        "sequence_number": sequence + 1}))


class _Item:
    __slots__ = ("data", "index", "kind", "text")

    def __init__(self, kind: str, index: int, data: dict[str, Any]) -> None:
        self.kind = kind  # message | function_call | reasoning
        self.index = index
        self.data = data
        self.text: list[str] = []


class ChatToResponses:
    """One chat stream in, one Responses stream out."""

    def __init__(self, body: dict[str, Any], rid: str, store: bool = False) -> None:
        self.body = body
        self.rid = rid
        self.store = store  # the gateway keeps the response (affinity.py)
        self.suffix = rid.removeprefix("resp_")
        self.sequence = 0
        self.response = skeleton(body, rid, "in_progress", store=store)
        self.items: list[_Item] = []
        self._open: dict[str, _Item] = {}  # by kind, or "call:<index>"
        self.chat_usage: dict[str, Any] | None = None
        self.finish_reason: Any = None
        self.started = False

    def _emit(self, kind: str, **data: Any) -> bytes:
        data = {"type": kind, **data, "sequence_number": self.sequence}
        self.sequence += 1
        return event(kind, data)

    def start(self) -> bytes:
        self.started = True
        return (self._emit("response.created", response=self.response)
                + self._emit("response.in_progress", response=self.response))

    def feed(self, complete: bytes) -> bytes:
        """Complete chat SSE events in, Responses events out."""
        out = [] if self.started else [self.start()]
        for raw in complete.split(b"\n\n"):
            payload = payload_of(raw) if raw else None
            if payload is None:
                continue
            if isinstance(payload.get("usage"), dict):
                self.chat_usage = payload["usage"]
            for choice in payload.get("choices") or []:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    out.append(self._choice(choice))
        return b"".join(out)

    def _choice(self, choice: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            item = self._item("reasoning", out)
            item.text.append(reasoning)
            out.append(self._emit("response.reasoning_text.delta", item_id=item.data["id"],
                                  output_index=item.index, content_index=0, delta=reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            item = self._item("message", out)
            item.text.append(content)
            out.append(self._emit("response.output_text.delta", item_id=item.data["id"],
                                  output_index=item.index, content_index=0, delta=content,
                                  logprobs=[]))
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            item = self._call(call, out)
            arguments = (call.get("function") or {}).get("arguments")
            if isinstance(arguments, str) and arguments:
                item.text.append(arguments)
                out.append(self._emit("response.function_call_arguments.delta",
                                      item_id=item.data["id"], output_index=item.index,
                                      delta=arguments))
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            out.append(self._close_all())
        return b"".join(out)

    def _add(self, key: str, item: _Item, out: list[bytes]) -> _Item:
        self.items.append(item)
        self._open[key] = item
        out.append(self._emit("response.output_item.added", output_index=item.index,
                              item=item.data))
        return item

    def _item(self, kind: str, out: list[bytes]) -> _Item:
        item = self._open.get(kind)
        if item is not None:
            return item
        if kind == "message":  # text after reasoning ends the reasoning
            if "reasoning" in self._open:
                out.append(self._close(self._open.pop("reasoning")))
            data = message_item(f"msg_{self.suffix}_{len(self.items)}", "", "in_progress")
            data["content"] = []
            item = self._add(kind, _Item(kind, len(self.items), data), out)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self._emit("response.content_part.added", item_id=data["id"],
                                  output_index=item.index, content_index=0, part=part))
            return item
        data = reasoning_item(f"rs_{self.suffix}_{len(self.items)}", "")
        data["content"] = []
        return self._add(kind, _Item(kind, len(self.items), data), out)

    def _call(self, call: dict[str, Any], out: list[bytes]) -> _Item:
        key = f"call:{call.get('index', 0)}"
        item = self._open.get(key)
        if item is not None:
            return item
        data = call_item(f"fc_{self.suffix}_{len(self.items)}",
                         {"id": call.get("id"), "function": {
                             "name": (call.get("function") or {}).get("name")}},
                         "in_progress")
        return self._add(key, _Item("function_call", len(self.items), data), out)

    def _close(self, item: _Item) -> bytes:
        text = "".join(item.text)
        iid, index = item.data["id"], item.index
        out: list[bytes] = []
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out += [self._emit("response.output_text.done", item_id=iid, output_index=index,
                               content_index=0, text=text, logprobs=[]),
                    self._emit("response.content_part.done", item_id=iid, output_index=index,
                               content_index=0, part=part)]
            item.data = message_item(iid, text)
        elif item.kind == "reasoning":
            out.append(self._emit("response.reasoning_text.done", item_id=iid,
                                  output_index=index, content_index=0, text=text))
            item.data = reasoning_item(iid, text)
        else:
            out.append(self._emit("response.function_call_arguments.done", item_id=iid,
                                  output_index=index, name=item.data["name"], arguments=text))
            item.data = {**item.data, "arguments": text, "status": "completed"}
        out.append(self._emit("response.output_item.done", output_index=index, item=item.data))
        return b"".join(out)

    def _close_all(self) -> bytes:
        out = [self._close(item) for item in self._open.values()]
        self._open.clear()
        return b"".join(out)

    def finish(self, usage: Usage | None) -> bytes:
        """The chat stream ended complete: close what is open, then response.completed (or
        .incomplete) with the usage — the backend's, else what the gateway counted."""
        out = [b"" if self.started else self.start(), self._close_all()]
        status, incomplete = ending(self.finish_reason)
        self.response = {**self.response, "status": status, "incomplete_details": incomplete,
                         "output": [item.data for item in self.items],
                         "usage": usage_of(self.chat_usage) or
                         (usage_dict(usage) if usage is not None else None)}
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._emit(kind, response=self.response))
        return b"".join(out)

    def fail(self, error: GatehouseError, request_id: str) -> bytes:
        out = b"" if self.started else self.start()
        self.response = {**self.response, "output": [item.data for item in self.items]}
        return out + failure_events(error, self.response, self.sequence, request_id)
