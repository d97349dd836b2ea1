"""POST /v1/responses end to end with the official openai SDK: the demo backend (which speaks
the Responses API), the test upstream as a chat-only backend (the gateway translates), keys,
quotas, request ids, metering and every error path — one gateway for the module. Every body
and event is validated against the SDK's own types (the SDK itself builds them unchecked)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.e2e.conftest import upstream_cfg
from tests.e2e.test_identity import cli
from tests.e2e.test_quota import wait_for_window
from tests.support.procs import Gateway, Upstream, free_port

pytestmark = pytest.mark.e2e

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@pytest.fixture(scope="module")
def gw(proc_dir: Path, up_a: Upstream) -> Iterator[Gateway]:
    gateway = Gateway(proc_dir, {
        "identity": {"require_key": True},
        "tiers": {"default": {"limits": {"requests_per_minute": 10_000}},
                  "one": {"limits": {"requests_per_minute": 1}},
                  "tokens": {"limits": {"tokens_per_minute": 3000}}},
        "upstreams": {"a": upstream_cfg(up_a),
                      "gone": {"base_url": f"http://127.0.0.1:{free_port()}/v1",
                               "connect_timeout": 0.5}},
        "models": {"chatonly": {"backends": [{"upstream": "a", "model": "test-model"}]},
                   "down": {"backends": [{"upstream": "gone"}]}},
    })
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> dict[str, str]:
    cli(gw.config_path, "orgs", "create", "acme")
    cli(gw.config_path, "projects", "create", "acme/app")
    return {tier: cli(gw.config_path, "keys", "create", "acme/app", "--tier", tier).strip()
            for tier in ("default", "one", "tokens")}


@pytest.fixture
def sdk(gw: Gateway, keys: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["default"], max_retries=0)


@pytest.fixture(autouse=True)
def _healthy(up_a: Upstream) -> None:
    up_a.reset()


def checked(raw: Any) -> Response:
    """The raw JSON of an answer, validated as a Response."""
    return Response.model_validate(json.loads(raw.text))


def streamed(sdk: openai.OpenAI, **body: Any) -> list[Any]:
    """Every event of a streamed response, each validated as a ResponseStreamEvent."""
    with sdk.responses.create(stream=True, **body) as stream:
        events = [EVENTS.validate_python(e.to_dict()) for e in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_demo_answers_plain_with_ids_limits_and_usage(sdk: openai.OpenAI, gw: Gateway) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="demo", input="knock knock", instructions="Answer briefly.")
    answer = checked(raw)
    assert answer.status == "completed" and "knock knock" in answer.output_text
    assert answer.instructions == "Answer briefly." and answer.model == "demo"
    assert answer.usage is not None and answer.usage.output_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    record = gw.record(raw.headers["x-request-id"])
    assert (record["path"], record["status"], record["backend"]) == ("/v1/responses", 200, "demo")
    assert (record["prompt_tokens"], record["completion_tokens"]) == \
        (answer.usage.input_tokens, answer.usage.output_tokens)
    assert gw.metric("gen_ai_client_token_usage_count", gen_ai_operation_name="chat",
                     gen_ai_request_model="demo") >= 1  # a GenAI "chat" operation


def test_demo_streams_typed_events_ending_with_usage(sdk: openai.OpenAI) -> None:
    events = streamed(sdk, model="demo", input=[{"role": "user", "content": "ping"}])
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert done.output_text == text and "ping" in text
    assert done.usage.output_tokens == len([k for k in kinds if k.endswith("text.delta")])


def test_chat_only_backend_is_translated_both_ways(sdk: openai.OpenAI, up_a: Upstream,
                                                  gw: Gateway) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="chatonly", instructions="Be terse.", max_output_tokens=5, temperature=0.5,
        input=[{"role": "user", "content": "What is the weather?"},
               {"type": "function_call", "call_id": "c1", "name": "weather",
                "arguments": '{"city": "Oslo"}'},
               {"type": "function_call_output", "call_id": "c1", "output": "rain"},
               {"role": "user", "content": [{"type": "input_text", "text": "And so?"}]}],
        tools=[WEATHER], tool_choice="auto")
    answer = checked(raw)
    sent = up_a.stats()["last_body"]
    assert sent["model"] == "test-model" and sent["max_tokens"] == 5
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "user", "content": [{"type": "text", "text": "And so?"}]}]
    assert sent["tools"] == [{"type": "function", "function": {
        k: v for k, v in WEATHER.items() if k != "type"}}]
    assert answer.model == "chatonly" and answer.id.startswith("resp_")
    assert answer.output_text == "a w1 w2 w3 w4" and answer.status == "completed"
    assert answer.usage is not None and answer.usage.output_tokens == 5
    assert gw.record(raw.headers["x-request-id"])["completion_tokens"] == 5


def test_chat_tool_calls_come_back_as_function_calls(sdk: openai.OpenAI,
                                                    up_a: Upstream) -> None:
    up_a.control(tool_call={"name": "weather", "arguments": '{"city": "Bergen"}'})
    answer = checked(sdk.responses.with_raw_response.create(
        model="chatonly", input="Weather in Bergen?", tools=[WEATHER]))
    call = answer.output[0]
    assert (call.type, call.name, call.arguments) == ("function_call", "weather",
                                                      '{"city": "Bergen"}')
    events = streamed(sdk, model="chatonly", input="Weather in Bergen?", tools=[WEATHER])
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"city": "Bergen"}' and len(deltas) == 2
    final = events[-1].response.output[0]
    assert (final.type, final.name, final.arguments) == ("function_call", "weather",
                                                         '{"city": "Bergen"}')
    assert call.call_id.startswith("call_") and final.call_id.startswith("call_")


def test_chat_only_stream_is_translated_and_metered(sdk: openai.OpenAI, up_a: Upstream,
                                                   gw: Gateway) -> None:
    events = streamed(sdk, model="chatonly", input="hello")
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "a w1 w2 w3 w4 w5 w6 w7"
    assert events[-1].response.usage.output_tokens == 8
    up_a.control(omit_usage=True)  # a backend that reports no usage: the gateway counts
    events = streamed(sdk, model="chatonly", input="hello")
    assert events[-1].response.usage.output_tokens == 8  # the gateway counts words here
    rid = events[-1].response.id.replace("resp_", "req_")
    record = gw.record(rid)
    assert (record["usage_counted_by"], record["completion_tokens"]) == ("gateway", 8)


def test_the_gateway_keeps_translated_responses_for_follow_ups(
        sdk: openai.OpenAI, up_a: Upstream) -> None:
    first = sdk.responses.create(model="chatonly", input="My name is Ada.",
                                 instructions="Be kind.")
    assert first.store is True
    follow = sdk.responses.create(model="chatonly", input="What is my name?",
                                  previous_response_id=first.id)
    assert follow.previous_response_id == first.id
    sent = up_a.stats()["last_body"]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "My name is Ada."), ("assistant", first.output_text),
        ("user", "What is my name?")]  # instructions are not carried over, as OpenAI does
    events = streamed(sdk, model="chatonly", input="Again?", previous_response_id=follow.id)
    assert len(up_a.stats()["last_body"]["messages"]) == 5
    last = events[-1].response
    found = checked(sdk.responses.with_raw_response.retrieve(last.id))
    assert (found.id, found.output_text) == (last.id, last.output_text)
    items = sdk.responses.input_items.list(last.id)
    assert len(items.data) == 5
    sdk.responses.delete(last.id)
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.retrieve(last.id)
    assert caught.value.code == "response_not_found"
    for gone in (last.id, "resp_never"):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.responses.create(model="chatonly", input="?", previous_response_id=gone)
        assert (caught.value.code, caught.value.param) == ("previous_response_not_found",
                                                           "previous_response_id")
    unkept = sdk.responses.create(model="chatonly", input="x", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unkept.id)


def test_a_stream_that_breaks_ends_with_error_and_response_failed(
        sdk: openai.OpenAI, up_a: Upstream) -> None:
    up_a.control(fail_after_chunks=3)
    events = streamed(sdk, model="chatonly", input="hello")
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].code == "upstream_error"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.code == "server_error"


def test_what_cannot_be_translated_is_a_400_naming_the_field(sdk: openai.OpenAI) -> None:
    cases = [({"tools": [{"type": "web_search"}]}, "tools[0].type"),
             ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
             ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
             ({"conversation": "conv_1"}, "conversation")]
    for extra, param in cases:
        body = {"model": "chatonly", "input": "hi", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.responses.create(**body)
        assert caught.value.code == "unsupported_parameter" and caught.value.param == param
        assert param in caught.value.message


def test_bad_bodies_are_400s_in_openais_shape(gw: Gateway, keys: dict[str, str]) -> None:
    cases = [({"model": "demo"}, "input"), ({"model": "demo", "input": 3}, "input"),
             ({"model": "demo", "input": [1]}, "input[0]"),
             ({"model": "demo", "input": "x", "tools": [{}]}, "tools[0].type"),
             ({"model": "demo", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
             ({"model": "demo", "input": "x", "background": True}, "background"),
             ({"model": "nope", "input": "x"}, "model")]
    for body, param in cases:
        r = httpx.post(gw.url + "/v1/responses", json=body,
                       headers={"authorization": f"Bearer {keys['default']}"})
        assert r.status_code in (400, 404), r.text
        assert r.json()["error"]["param"] == param and r.json()["request_id"]


def test_quota_refuses_with_429_and_no_key_with_401(gw: Gateway, keys: dict[str, str]) -> None:
    wait_for_window(15)
    one = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["one"], max_retries=0)
    one.responses.create(model="demo", input="first")
    with pytest.raises(openai.RateLimitError) as caught:
        one.responses.create(model="demo", input="second", stream=True)
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    nobody = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        nobody.responses.create(model="demo", input="hi")


def test_an_unreachable_backend_is_a_503(sdk: openai.OpenAI, gw: Gateway) -> None:
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.responses.create(model="down", input="hi", stream=stream)
        assert caught.value.status_code == 503
        assert caught.value.code == "upstream_unavailable"


def test_moderations_images_and_speech_are_passed_on_with_keys_and_ids(
        sdk: openai.OpenAI, gw: Gateway) -> None:
    moderation = sdk.moderations.with_raw_response.create(model="chatonly", input=["a", "b"])
    assert len(moderation.parse().results) == 2
    assert moderation.headers["x-ratelimit-limit-requests"] == "10000"
    image = sdk.images.generate(model="chatonly", prompt="a cat", n=2)
    assert image.data is not None and [d.revised_prompt for d in image.data] == ["a cat"] * 2
    speech = sdk.audio.speech.with_raw_response.create(model="chatonly", voice="alloy",
                                                       input="hi")
    assert speech.headers["content-type"] == "audio/mpeg" and speech.content == b"ID3ahi"
    record = gw.record(speech.headers["x-request-id"])
    assert (record["endpoint"], record["backend"], record["status"]) == ("audio.speech", "a", 200)
    with pytest.raises(openai.NotFoundError) as caught:  # the demo serves none of them
        sdk.moderations.create(model="demo", input="x")
    assert "does not serve moderations" in caught.value.message
    for call, param in ((lambda: sdk.moderations.create(input="x"), "model"),
                        (lambda: sdk.images.generate(model="chatonly", prompt="x",
                                                     stream=True), "stream")):
        with pytest.raises(openai.BadRequestError) as bad:
            call()
        assert bad.value.param == param


def test_audio_uploads_are_passed_on_with_the_model_renamed_and_capped(
        sdk: openai.OpenAI, gw: Gateway, keys: dict[str, str]) -> None:
    sound = b"RIFF" + bytes(range(256)) * 40
    text = sdk.audio.transcriptions.create(model="chatonly", file=("a.wav", sound),
                                           language="en")
    said = text.text.split()
    assert said[:2] == ["a", "heard"] and said[-1] == "test-model"  # the backend's name
    assert int(said[2]) > len(sound)
    auth = {"authorization": f"Bearer {keys['default']}"}
    translated = httpx.post(gw.url + "/v1/audio/translations", headers=auth,
                            data={"model": "chatonly"}, files={"file": ("a.wav", sound)})
    assert translated.json()["text"].endswith("for test-model")  # (the SDK deprecates it)
    for call, code, param in (
            (lambda: sdk.audio.transcriptions.create(model="nope", file=("a.wav", b"x")),
             "model_not_found", "model"),
            (lambda: sdk.audio.transcriptions.create(model="chatonly", file=("a.wav", b"x"),
                                                     stream=True),
             "unsupported_parameter", "stream")):
        with pytest.raises(openai.APIStatusError) as caught:
            call()
        assert (caught.value.code, caught.value.param) == (code, param)
    r = httpx.post(gw.url + "/v1/audio/transcriptions", headers=auth,
                   files={"file": ("a.wav", b"x")})  # no model
    assert (r.status_code, r.json()["error"]["param"]) == (400, "model")
    r = httpx.post(gw.url + "/v1/audio/transcriptions", headers=auth, json={"model": "x"})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "file")
    big = httpx.post(gw.url + "/v1/audio/transcriptions", headers=auth,
                     data={"model": "chatonly"}, files={"file": ("a.wav", bytes(26 << 20))})
    assert (big.status_code, big.json()["error"]["code"]) == (413, "request_too_large")


def test_other_openai_endpoints_are_a_404_naming_what_is_served(sdk: openai.OpenAI,
                                                                gw: Gateway) -> None:
    calls = [lambda: sdk.images.edit(image=b"png", prompt="x"),
             lambda: sdk.files.list(), lambda: sdk.batches.list()]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.code == "unsupported_endpoint"
        assert "POST /v1/responses" in caught.value.message
        record = gw.record(caught.value.response.headers["x-request-id"])
        assert record["error_code"] == "unsupported_endpoint"


def test_hostile_bodies_get_clear_4xx_and_others_are_served(sdk: openai.OpenAI, gw: Gateway,
                                                            keys: dict[str, str]) -> None:
    """What a stranger sends the new endpoints — deep nesting, more than the body limit,
    broken JSON, a broken multipart upload, a forged response id — gets a 4xx in OpenAI's
    shape with a request id, never a 500 or a hang; a well-behaved caller is served between
    them."""
    auth = {"authorization": f"Bearer {keys['default']}"}
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/responses", {"json": {"model": "chatonly", "input": deep}}),
        ("/v1/responses", {"content": b'{"model": "chatonly", "input": [',
                           "headers": {"content-type": "application/json"}}),
        ("/v1/responses", {"content": b"{" + b" " * (11 * 1024 * 1024) + b"}",
                           "headers": {"content-type": "application/json"}}),
        ("/v1/moderations", {"json": {"model": "chatonly", "input": deep}}),
        ("/v1/audio/transcriptions", {
            "content": b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nchat",
            "headers": {"content-type": "multipart/form-data; boundary=b"}}),
        ("/v1/audio/transcriptions", {"content": b"\x00" * 64,
                                      "headers": {"content-type": "multipart/form-data"}}),
        ("/v1/responses", {"json": {"model": "chatonly", "input": "hi",
                                    "previous_response_id": "resp_" + "f" * 40}}),
    ]
    for path, request in cases:
        extra_headers = request.pop("headers", {})
        r = httpx.post(gw.url + path, headers={**auth, **extra_headers}, timeout=30, **request)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
        error = r.json()["error"]
        assert error["message"] and r.json()["request_id"], r.text[:200]
        # a well-behaved caller is served between the hostile ones
        assert sdk.responses.create(model="chatonly", input="still there?").output_text


@pytest.mark.parametrize(("answer", "stream"), [
    ({"status": 200, "content_type": "application/json",
      "body": '{"choices": [{"index": 0, "message": 5}]}'}, False),
    ({"status": 200, "content_type": "application/json", "body": '{"id": "x"}'}, False),
    ({"status": 200, "content_type": "application/json",
      "body": '{"error": {"message": "overloaded"}}'}, False),
    ({"status": 200, "content_type": "text/event-stream",
      "body": 'data: {"choices": 5}\n\ndata: [DONE]\n\n'}, True),
])
def test_a_chat_answer_that_cannot_be_translated_is_upstream_error(
        sdk: openai.OpenAI, up_a: Upstream, answer: dict[str, Any], stream: bool) -> None:
    """Translated for a chat-only backend, an answer of the wrong shape was a 500
    internal_error (the gateway's own fault: an AttributeError in the translation), or a
    200 Response "completed" with no output; it is the backend's: upstream_error."""
    up_a.control(raw_answer=answer)
    with pytest.raises(openai.InternalServerError) as caught:
        if stream:
            list(sdk.responses.create(model="chatonly", input="hi", stream=True))
        else:
            sdk.responses.create(model="chatonly", input="hi")
    assert caught.value.code == "upstream_error", caught.value.body


def test_a_follow_up_is_charged_for_the_conversation_it_sends(
        sdk: openai.OpenAI, up_a: Upstream, gw: Gateway) -> None:
    """A backend that reports no usage: the gateway counts the prompt, and a follow-up's is
    the kept conversation put before its input too — it was the new input alone (250 KB
    sent, 15 tokens charged, ``input_tokens: 6`` shown)."""
    words = " ".join(["word"] * 5000)
    first = sdk.responses.create(model="chatonly", input=words)
    up_a.control(omit_usage=True)
    raw = sdk.responses.with_raw_response.create(model="chatonly", input="and?",
                                                 previous_response_id=first.id)
    follow = checked(raw)
    assert follow.usage is not None and follow.usage.input_tokens > 5000
    record = gw.record(raw.headers["x-request-id"])
    assert record["usage_counted_by"] == "gateway" and record["prompt_tokens"] > 5000


def test_a_follow_up_reserves_for_the_conversation_it_sends(
        sdk: openai.OpenAI, up_a: Upstream, gw: Gateway, keys: dict[str, str]) -> None:
    """The reservation before the call counts the kept conversation too: a follow-up whose
    history alone is over a 3,000 tokens-a-minute limit is refused as too large, before any
    backend works on it — it reserved the new input's few tokens and was sent."""
    first = sdk.responses.create(model="chatonly", input=" ".join(["word"] * 4000))
    small = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["tokens"], max_retries=0)
    sent = up_a.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as caught:
        small.responses.create(model="chatonly", input="and?", previous_response_id=first.id)
    assert "Request too large" in caught.value.message
    assert up_a.stats()["requests"] == sent  # refused before the backend
    # a short conversation continues within the limit
    short = small.responses.create(model="chatonly", input="hi")
    assert small.responses.create(model="chatonly", input="and?",
                                  previous_response_id=short.id).status == "completed"
