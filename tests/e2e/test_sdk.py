"""The official openai SDK against a real gateway process in front of real upstream processes."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.support.procs import Gateway, Upstream

REQUEST_ID = re.compile(r"^req_[0-9a-z]{26}$")
HELLO = [{"role": "user", "content": "hello there"}]


def client(gw: Gateway, **kwargs: object) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_non_stream_chat_passes_through_with_usage_and_request_id(shared_gateway: Gateway,
                                                                  up_a: Upstream) -> None:
    raw = client(shared_gateway).chat.completions.with_raw_response.create(
        model="m", messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("a ")  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.completion_tokens == 8
    assert REQUEST_ID.match(completion._request_id or "")
    assert raw.headers["openai-processing-ms"].isdigit()
    record = shared_gateway.record(completion._request_id or "")
    assert record["backend"] == "a" and record["status"] == 200
    assert record["completion_tokens"] == 8 and record["prompt_tokens"] == completion.usage.prompt_tokens


def test_stream_with_usage_requested_returns_usage_chunk(shared_gateway: Gateway) -> None:
    stream = client(shared_gateway).chat.completions.create(
        model="m", messages=HELLO, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a w1 w2 w3 w4 w5 w6 w7"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    rid = stream.response.headers["x-request-id"]
    assert shared_gateway.record(rid)["completion_tokens"] == 8


def test_stream_without_usage_is_still_metered_and_usage_chunk_not_forwarded(
        shared_gateway: Gateway) -> None:
    with client(shared_gateway).chat.completions.with_streaming_response.create(
            model="m", messages=HELLO, stream=True) as response:
        rid = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert all(c.choices for c in chunks), "a usage-only chunk reached a client that did not ask"
    record = shared_gateway.record(rid)
    assert record["completion_tokens"] == 8 and record["stream"] is True


def test_stream_passes_chunks_before_upstream_finishes(shared_gateway: Gateway,
                                                       up_a: Upstream) -> None:
    up_a.control(ms_per_token=500, reply_tokens=6)  # 3 s: still generating, however slow we are
    for _ in range(100):  # an earlier test's stream still being answered would be counted
        if up_a.stats()["active"] == 0:
            break
        time.sleep(0.1)
    completed = up_a.stats()["streams_completed"]
    stream = client(shared_gateway).chat.completions.create(model="m", messages=HELLO,
                                                            stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "a"
    # the first chunk reached us while the upstream was still generating: no buffering
    assert up_a.stats()["streams_completed"] == completed
    rest = list(stream)
    assert len(rest) >= 5
    assert up_a.stats()["streams_completed"] == completed + 1


async def test_async_client_stream_and_completions(shared_gateway: Gateway) -> None:
    aclient = AsyncOpenAI(base_url=shared_gateway.url + "/v1", api_key="x", max_retries=0)
    stream = await aclient.completions.create(model="m", prompt="say something", stream=True)
    pieces = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(pieces) == "a w1 w2 w3 w4 w5 w6 w7"
    completion = await aclient.completions.create(model="m", prompt="again", max_tokens=3)
    assert completion.choices[0].text == "a w1 w2"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    await aclient.close()


def test_embeddings_and_models(shared_gateway: Gateway) -> None:
    c = client(shared_gateway)
    result = c.embeddings.create(model="m", input=["one", "two"], encoding_format="float")
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert {m.id for m in c.models.list()} == {"m", "ab", "demo"}
    assert c.models.retrieve("m").id == "m"
    with pytest.raises(openai.NotFoundError) as info:
        c.models.retrieve("nope")
    assert info.value.code == "model_not_found"


def test_a_large_embeddings_answer_passes_whole_and_is_metered(shared_gateway: Gateway,
                                                               up_a: Upstream) -> None:
    """128 inputs × 3,072 full-precision numbers (~8 MB): read once by the gateway for its
    shape and usage, passed on byte for byte as the backend sent it."""
    inputs = [f"passage {i}" for i in range(128)]
    raw = client(shared_gateway).embeddings.with_raw_response.create(
        model="m", input=inputs, dimensions=3072, encoding_format="float")
    result = raw.parse()
    direct = OpenAI(base_url=up_a.url + "/v1", api_key="x", max_retries=0).embeddings.create(
        model="test-model", input=inputs, dimensions=3072, encoding_format="float")
    assert len(raw.content) > 7_000_000
    assert [d.embedding for d in result.data] == [d.embedding for d in direct.data]
    assert len(result.data[5].embedding) == 3072
    record = shared_gateway.record(result._request_id or "")
    assert record["status"] == 200 and record["backend"] == "a"
    assert record["prompt_tokens"] == result.usage.prompt_tokens == direct.usage.prompt_tokens > 0


def test_demo_model_answers_with_no_upstream(shared_gateway: Gateway) -> None:
    c = client(shared_gateway)
    completion = c.chat.completions.create(model="demo", messages=HELLO)
    content = completion.choices[0].message.content or ""
    assert "demo backend, not a language model" in content and "hello there" in content
    assert completion.usage is not None and completion.usage.completion_tokens == 24
    emb = c.embeddings.create(model="demo", input="x")  # the SDK asks for base64 by default
    assert len(emb.data[0].embedding) == 64


@pytest.mark.parametrize("kwargs, error, code, param", [
    ({"model": "m", "messages": []}, openai.BadRequestError, "invalid_value", "messages"),
    ({"model": "m", "messages": "hi"}, openai.BadRequestError, "invalid_type", "messages"),
    ({"model": "nope", "messages": HELLO}, openai.NotFoundError, "model_not_found", "model"),
    ({"model": "m", "messages": HELLO, "temperature": 9}, openai.BadRequestError,
     "invalid_value", "temperature"),
])
def test_sdk_raises_the_matching_error_class(shared_gateway: Gateway, kwargs: dict[str, object],
                                              error: type[openai.APIStatusError], code: str,
                                              param: str) -> None:
    with pytest.raises(error) as info:
        client(shared_gateway).chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert info.value.code == code and info.value.param == param
    assert REQUEST_ID.match(info.value.request_id or "")
    assert shared_gateway.record(info.value.request_id or "")["error_code"] == code


def test_missing_messages_and_oversize_body(shared_gateway: Gateway) -> None:
    c = client(shared_gateway)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="m", messages=None)  # type: ignore[arg-type]
    assert info.value.code == "missing_required_parameter"
    big = [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]
    with pytest.raises(openai.APIStatusError) as too_big:
        c.chat.completions.create(model="m", messages=big)  # type: ignore[arg-type]
    assert too_big.value.status_code == 413 and too_big.value.code == "request_too_large"


def test_client_request_id_is_echoed_and_logged(shared_gateway: Gateway) -> None:
    raw = client(shared_gateway).chat.completions.with_raw_response.create(
        model="m", messages=HELLO, extra_headers={"X-Client-Request-Id": "my-trace-42"})
    assert raw.headers["x-client-request-id"] == "my-trace-42"
    record = shared_gateway.record(raw.headers["x-request-id"])
    assert record["client_request_id"] == "my-trace-42"
    with pytest.raises(openai.BadRequestError) as info:
        client(shared_gateway).chat.completions.create(
            model="m", messages=HELLO, extra_headers={"X-Client-Request-Id": "x" * 513})
    assert info.value.code == "invalid_client_request_id"
    assert REQUEST_ID.match(info.value.request_id or "")


def test_upstream_client_error_passes_through(shared_gateway: Gateway, up_a: Upstream) -> None:
    up_a.control(status=422, times=1)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client(shared_gateway).chat.completions.create(model="m", messages=HELLO)
    assert info.value.request_id and up_a.stats()["requests"] >= 1


def test_readyz_reports_backends(shared_gateway: Gateway) -> None:
    body = httpx.get(shared_gateway.url + "/readyz").json()
    assert body["status"] == "ready"
    assert body["backends"]["a"]["reachable"] and body["models"]["ab"]["ready"]


def test_several_workers_share_metrics(start_gateway, up_a: Upstream) -> None:  # type: ignore[no-untyped-def]
    gw = start_gateway({"upstreams": {"a": {"base_url": up_a.url + "/v1"}},
                        "models": {"m": {"backends": ["a"]}}}, workers=2)
    c = client(gw)
    for _ in range(20):
        c.chat.completions.create(model="m", messages=HELLO)
    totals = {gw.metric("gatehouse_requests_total", model="m", status="200") for _ in range(6)}
    assert totals == {20.0}, "every worker's /metrics reports the sum over all workers"
    assert gw.metric("gatehouse_inflight_requests") == 0
