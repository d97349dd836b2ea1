"""A backend's "success" that is not an answer — a proxy's login page with 200, a redirect, an
empty 204, a JSON error sent with 200, JSON to a stream request — is a failure of that
backend: the next one answers, and with none left the client gets ``upstream_error`` (a 5xx
the SDKs retry), never the page passed on as a completion. Through the official SDK, against
the test upstream told to answer exactly so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.e2e.conftest import upstream_cfg
from tests.support.procs import Gateway, Upstream

HELLO = [{"role": "user", "content": "hello"}]
HTML = {"status": 200, "content_type": "text/html", "body": "<html>Sign in to the proxy</html>"}
ANSWERS = {
    "html": HTML,
    "redirect": {"status": 302, "content_type": "text/plain", "body": ""},
    "no_content": {"status": 204, "content_type": "application/json", "body": ""},
    "error_as_200": {"status": 200, "content_type": "application/json",
                     "body": '{"error": {"message": "model overloaded", "code": 503}}'},
    "not_a_completion": {"status": 200, "content_type": "application/json", "body": '{"id": "x"}'},
    "array": {"status": 200, "content_type": "application/json", "body": "[1, 2, 3]"},
}


def gateway(start_gateway: Callable[..., Gateway], *ups: Upstream) -> Gateway:
    return start_gateway({
        "upstreams": {up.name: upstream_cfg(up) for up in ups},
        # the first upstream is tried first (test_failover.py's way of ordering them)
        "models": {"m": {"backends": [{"upstream": up.name, "model": "test-model",
                                       "weight": 1e9 if i == 0 else 1e-9}
                                      for i, up in enumerate(ups)]}}})


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_a_backend_answer_that_is_no_answer_is_upstream_error(
        start_gateway: Callable[..., Gateway], up_a: Upstream, answer: str) -> None:
    up_a.control(raw_answer=ANSWERS[answer])
    gw = gateway(start_gateway, up_a)
    client = sdk(gw)
    for call in (lambda: client.chat.completions.create(model="m", messages=HELLO),
                 lambda: client.embeddings.create(model="m", input="hello")):
        with pytest.raises(openai.InternalServerError) as caught:
            call()
        body: Any = caught.value.body
        assert body["code"] == "upstream_error" and caught.value.request_id
        record = gw.record(caught.value.request_id)
        assert record["outcome"] == "error" and record["total_tokens"] is None
        assert record["attempts"] == ["a:Malformed"], record["attempts"]


def test_json_to_a_stream_request_is_upstream_error(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """A backend that ignores ``stream: true`` and answers JSON: the client's stream was raw
    JSON with no ``data:`` line, which the SDK read as an empty answer."""
    up_a.control(raw_answer={"status": 200, "content_type": "application/json", "body":
                             '{"choices": [{"index": 0, "message": {"content": "hi"}}]}'})
    gw = gateway(start_gateway, up_a)
    with pytest.raises(openai.InternalServerError) as caught:
        list(sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True))
    assert caught.value.code == "upstream_error"
    up_a.control(raw_answer=HTML)
    with pytest.raises(openai.InternalServerError):
        list(sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True))


def test_the_next_backend_answers_instead(start_gateway: Callable[..., Gateway],
                                          up_a: Upstream, up_b: Upstream) -> None:
    up_a.control(raw_answer=HTML)
    gw = gateway(start_gateway, up_a, up_b)
    reply = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
    assert reply.parse().choices[0].message.content.startswith("b ")
    record = gw.record(reply.headers["x-request-id"])
    assert record["attempts"] == ["a:Malformed", "b"] and record["backend"] == "b"
    stream = sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("b")
