"""The test upstream's Responses API (``--responses``): a backend that speaks it natively and
stores what it answers, as OpenAI does — so tests can follow a response up
(``previous_response_id``) and read, list and delete it on the one backend that holds it.

Its reply says who answered and how many messages it saw (``"a saw 3 messages"``), so a test
can tell that a follow-up reached the backend with the conversation. Requests are translated
with the gateway's own bridge (gatehouse/upstream/responses_bridge.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gatehouse.errors import InvalidRequest
from gatehouse.upstream.responses_bridge import input_items, to_chat, to_response
from gatehouse.upstream.responses_events import ChatToResponses


def _error(message: str, param: str | None, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": code}}


class StoredResponses:
    def __init__(self, name: str) -> None:
        self.name = name
        # response id → (the response, every input item of its conversation so far)
        self.kept: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    def create(self, body: dict[str, Any], raw: bytes) -> tuple[int, Any]:
        """(status, Response or error) — or (200, SSE bytes) for a stream."""
        items = input_items(body)
        previous = body.get("previous_response_id")
        if previous is not None:
            if previous not in self.kept:
                return 404, _error(f"Previous response with id '{previous}' not found.",
                                   "previous_response_id", "previous_response_not_found")
            earlier, history = self.kept[previous]
            items = history + earlier["output"] + items
        asked = {k: v for k, v in body.items() if k != "previous_response_id"}
        try:
            chat = to_chat({**asked, "input": items, "stream": False}, body.get("model", ""))
        except InvalidRequest as exc:
            return 400, _error(exc.message, exc.param, exc.code)
        said = f"{self.name} saw {len(chat['messages'])} messages"
        rid = "resp_" + hashlib.sha1(raw + str(len(self.kept)).encode()).hexdigest()[:24]
        answer = {"id": "chatcmpl-x", "created": 0, "choices": [{"index": 0, "finish_reason":
                  "stop", "message": {"role": "assistant", "content": said}}],
                  "usage": {"prompt_tokens": len(chat["messages"]),
                            "completion_tokens": len(said.split()),
                            "total_tokens": len(chat["messages"]) + len(said.split())}}
        response = to_response(body, answer, rid, None, body.get("store") is not False)
        if response["store"]:
            self.kept[rid] = (response, items)
        if not body.get("stream"):
            return 200, response
        bridge = ChatToResponses(body, rid, response["store"])
        words = said.split(" ")
        chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {
            "content": word if i == 0 else " " + word}}]} for i, word in enumerate(words)]
        chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                   {"choices": [], "usage": answer["usage"]}]
        events = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
        return 200, bridge.feed(events) + bridge.finish(None)

    def read(self, method: str, path: str) -> tuple[int, Any]:
        """GET/DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items."""
        response_id, _, tail = path.removeprefix("/v1/responses/").partition("/")
        if response_id not in self.kept:
            return 404, _error(f"Response with id '{response_id}' not found.", None,
                               "not_found")
        response, items = self.kept[response_id]
        if method == "DELETE":
            del self.kept[response_id]
            return 200, {"id": response_id, "object": "response", "deleted": True}
        if tail == "input_items":
            data = [{"id": f"msg_{response_id[5:]}_{i}", "type": "message", "status":
                     "completed", **item} for i, item in enumerate(items)]
            return 200, {"object": "list", "data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None}
        return 200, response
