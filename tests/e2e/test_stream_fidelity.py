"""Streams as the client gets them: no usage it did not ask for, whatever chunk the backend
puts it on, and a stream received in full recorded as complete even when the backend keeps
the connection open after [DONE] and the client leaves at once (as the SDKs do)."""

from __future__ import annotations

from collections.abc import Callable

import openai

from tests.e2e.conftest import upstream_cfg
from tests.support.procs import Gateway, Upstream

HELLO = [{"role": "user", "content": "hello"}]


def gateway_on(start_gateway: Callable[..., Gateway], up: Upstream) -> Gateway:
    return start_gateway({"upstreams": {"a": upstream_cfg(up)},
                          "models": {"m": {"backends": [{"upstream": "a",
                                                         "model": "test-model"}]}}})


def test_usage_on_a_chunk_with_choices_is_not_passed_on_unasked(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    up_a.control(usage_on_last_choice=True)
    gw = gateway_on(start_gateway, up_a)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.with_raw_response.create(model="m", messages=HELLO,
                                                              stream=True)
    request_id = stream.headers["x-request-id"]
    chunks = list(stream.parse())
    assert chunks and all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    record = gw.record(request_id)
    assert record["completion_tokens"] and record["outcome"] == "ok"  # metered all the same
    # asked for, it arrives
    asked = client.chat.completions.create(model="m", messages=HELLO, stream=True,
                                           stream_options={"include_usage": True})
    assert [c.usage.completion_tokens for c in asked if c.usage]


def test_a_stream_read_to_done_is_complete_though_the_backend_lingers(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    up_a.control(linger_after_done_ms=5000)
    gw = gateway_on(start_gateway, up_a)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    ids = []
    for _ in range(5):
        raw = client.chat.completions.with_raw_response.create(model="m", messages=HELLO,
                                                               stream=True)
        ids.append(raw.headers["x-request-id"])
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        raw.http_response.close()  # gone right after [DONE], as the sync SDK does
    for request_id in ids:
        record = gw.record(request_id)
        assert (record["status"], record["outcome"]) == (200, "ok"), record
