"""The Responses ⇄ chat completions bridge and the Responses stream tap, on their own: every
answer and event checked against the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gatehouse.context import Usage
from gatehouse.errors import InvalidRequest, UpstreamFailed
from gatehouse.upstream.responses_bridge import to_chat, to_response
from gatehouse.upstream.responses_events import ChatToResponses, failure_events
from gatehouse.upstream.responses_tap import ResponsesTap, texts_of_response

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def events_of(raw: bytes) -> list[Any]:
    out = []
    for block in raw.split(b"\n\n"):
        if block:
            kind, data = block.split(b"\n", 1)
            event = EVENTS.validate_json(data.removeprefix(b"data: "))
            assert kind == b"event: " + event.type.encode()
            out.append(event)
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps({"choices": choices, "usage": usage}) + b"\n\n"


def test_the_request_maps_as_the_table_says() -> None:
    chat = to_chat({"model": "m", "instructions": "sys", "input": [
        {"type": "message", "role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "http://i/x.png",
                                      "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "1"}],
        "tool_choice": {"type": "function", "name": "f"}, "max_output_tokens": 9,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}},
        "reasoning": {"effort": "low"}, "top_logprobs": 2, "store": True, "stream": True},
        "backend-name")
    assert chat["model"] == "backend-name" and chat["max_tokens"] == 9
    assert [m["role"] for m in chat["messages"]] == ["system", "developer", "user",
                                                     "assistant", "tool"]
    assert chat["messages"][2]["content"][1] == {"type": "image_url", "image_url": {
        "url": "http://i/x.png", "detail": "low"}}
    assert [c["id"] for c in chat["messages"][3]["tool_calls"]] == ["a", "b"]
    assert chat["messages"][3]["content"] == "calling"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"]["json_schema"]["name"] == "s"
    assert (chat["reasoning_effort"], chat["logprobs"], chat["top_logprobs"]) == ("low", True, 2)
    assert chat["stream_options"] == {"include_usage": True} and "store" not in chat


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"type": "input_file", "file_id": "f"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"input": "x", "truncation": "auto"}, "truncation"),
    ({"input": "x", "max_tool_calls": 3}, "max_tool_calls"),
    ({"input": "x", "prompt": {"id": "p"}}, "prompt"),
])
def test_what_does_not_map_is_refused_naming_the_field(body: dict[str, Any],
                                                       param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat({"model": "m", **body}, "m")
    assert caught.value.param == param and caught.value.status == 400


def test_a_whole_answer_becomes_a_response_with_every_kind_of_item() -> None:
    answer = {"created": 5, "choices": [{"index": 0, "finish_reason": "length", "message": {
        "role": "assistant", "content": "hi", "reasoning_content": "think",
        "tool_calls": [{"id": "c", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 2},
                  "completion_tokens_details": {"reasoning_tokens": 1}}}
    response = Response.model_validate(to_response({"model": "m", "input": "x"}, answer,
                                                   "resp_1", None))
    assert [i.type for i in response.output] == ["reasoning", "message", "function_call"]
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 2
    assert response.usage.output_tokens_details.reasoning_tokens == 1
    assert texts_of_response(response.model_dump()) == ["think", "hi", "{}"]
    assert Usage.from_openai(response.usage.model_dump()) == Usage(3, 4, 7)


def test_a_chat_stream_becomes_typed_events_in_order() -> None:
    bridge = ChatToResponses({"model": "m", "input": "x", "stream": True}, "resp_2")
    raw = bridge.feed(chunk({"role": "assistant", "reasoning_content": "hm"}))
    raw += bridge.feed(chunk({"content": "Hel"}) + chunk({"content": "lo"}))
    raw += bridge.feed(chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {
        "name": "f", "arguments": "{\"a\""}}]}))
    raw += bridge.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                             finish="tool_calls"))
    raw += bridge.feed(chunk(usage={"prompt_tokens": 2, "completion_tokens": 5,
                                    "total_tokens": 7}) + b"data: [DONE]\n\n")
    raw += bridge.finish(None)
    events = events_of(raw)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress",
                         "response.output_item.added"]
    assert "response.reasoning_text.done" in kinds
    assert kinds.index("response.reasoning_text.done") < kinds.index(
        "response.output_text.delta")  # text after reasoning closes the reasoning
    done = events[-1].response
    assert events[-1].type == "response.completed"
    assert [i.type for i in done.output] == ["reasoning", "message", "function_call"]
    assert done.output_text == "Hello" and done.output[2].arguments == '{"a":1}'
    assert done.usage.total_tokens == 7


def test_a_stream_without_usage_gets_the_gateways_count_and_a_broken_one_fails() -> None:
    bridge = ChatToResponses({"model": "m", "input": "x"}, "resp_3")
    raw = bridge.feed(chunk({"content": "a"}, finish="stop")) + bridge.finish(Usage(1, 1, 2))
    assert events_of(raw)[-1].response.usage.output_tokens == 1
    broken = ChatToResponses({"model": "m", "input": "x"}, "resp_4")
    raw = broken.feed(chunk({"content": "a"})) + broken.fail(
        UpstreamFailed("broke off"), "req_1")
    *_, error, failed = events_of(raw)
    assert (error.type, error.code, failed.response.status) == ("error", "upstream_error",
                                                                "failed")


def test_the_tap_reads_a_native_stream_in_any_cut() -> None:
    bridge = ChatToResponses({"model": "m", "input": "x"}, "resp_5")
    raw = bridge.feed(chunk({"content": "one two"}, finish="stop")) + bridge.finish(
        Usage(4, 2, 6))
    for cut in (1, 7, 50, len(raw)):
        tap = ResponsesTap()
        passed = b"".join(tap.feed(raw[i:i + cut]) for i in range(0, len(raw), cut))
        assert passed + tap.flush() == raw
        assert tap.done and tap.complete and tap.usage == Usage(4, 2, 6)
        assert tap.texts == ["one two"] and tap.response is not None
        assert tap.sequence == len(events_of(raw))
    partial = ResponsesTap()
    partial.feed(raw[:raw.index(b"response.output_text.done")])
    assert not partial.complete and partial.response is not None
    end = failure_events(UpstreamFailed("x"), partial.response, partial.sequence, "req_2")
    assert [e.sequence_number for e in events_of(end)] == [partial.sequence,
                                                           partial.sequence + 1]
