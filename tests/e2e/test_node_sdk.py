"""The official Node ``openai`` SDK (pinned in tests/node/package-lock.json) against a real
``gatehouse serve``: chat completions and the Responses API, plain and streamed, the request id
the SDK exposes, and the error classes it picks from our answers. Node runs tests/node/sdk.mjs,
which prints what the SDK made of each answer as JSON; one gateway for the module."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import KeyedGateway
from tests.e2e.test_quota import wait_for_window

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[1] / "node" / "sdk.mjs"
REQUEST_ID = re.compile(r"^req_[0-9a-z]{26}$")
REPLY = "a w1 w2 w3 w4 w5 w6 w7"  # the test upstream's answer: 8 words, 8 tokens


def node(kg: KeyedGateway, scenario: str, model: str = "m", key: str | None = None) -> Any:
    done = subprocess.run(["node", str(SCRIPT), scenario, model], check=False,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OPENAI_BASE_URL": kg.api,
                               "OPENAI_API_KEY": key or kg.key})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_chat_completion_with_usage_and_request_id(keyed_gateway: KeyedGateway) -> None:
    out = node(keyed_gateway, "chat")
    assert out["content"] == REPLY and out["usage"]["completion_tokens"] == 8
    assert REQUEST_ID.match(out["request_id"]) and out["header_request_id"] == out["request_id"]
    assert out["processing_ms"].isdigit()
    record = keyed_gateway.gw.record(out["request_id"])
    assert (record["status"], record["backend"], record["completion_tokens"]) == (200, "a", 8)
    assert record["prompt_tokens"] == out["usage"]["prompt_tokens"]


def test_chat_stream_ends_with_the_usage_chunk_asked_for(keyed_gateway: KeyedGateway) -> None:
    out = node(keyed_gateway, "chatStream")
    assert out["text"] == REPLY and out["chunks"] >= 9
    assert out["last_choices"] == [] and out["usage"]["completion_tokens"] == 8
    record = keyed_gateway.gw.record(out["request_id"])
    assert (record["stream"], record["completion_tokens"]) == (True, 8)


def test_responses_create(keyed_gateway: KeyedGateway) -> None:
    out = node(keyed_gateway, "responses")
    assert (out["status"], out["output_text"]) == ("completed", REPLY)
    assert out["instructions"] == "Answer briefly." and out["id"].startswith("resp_")
    assert out["usage"]["output_tokens"] == 8 and REQUEST_ID.match(out["request_id"])
    record = keyed_gateway.gw.record(out["request_id"])
    assert (record["path"], record["status"], record["completion_tokens"]) == \
        ("/v1/responses", 200, 8)


def test_responses_stream(keyed_gateway: KeyedGateway) -> None:
    out = node(keyed_gateway, "responsesStream")
    assert out["types"][:2] == ["response.created", "response.in_progress"]
    assert out["types"][-1] == "response.completed"
    assert out["sequence"] == list(range(len(out["types"])))
    assert out["text"] == REPLY == out["output"][0]["content"][0]["text"]
    assert out["usage"]["output_tokens"] == 8
    assert keyed_gateway.gw.record(out["request_id"])["stream"] is True


def test_a_bad_key_is_an_authentication_error_with_our_body(
        keyed_gateway: KeyedGateway) -> None:
    error = node(keyed_gateway, "chat", key="sk-not-a-key-at-all")["error"]
    assert (error["class"], error["instance_of"], error["status"]) == \
        ("AuthenticationError", ["AuthenticationError"], 401)
    assert set(error["body"]) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert error["message"] == "401 " + error["body"]["message"]
    assert REQUEST_ID.match(error["request_id"])
    assert keyed_gateway.gw.record(error["request_id"])["error_code"] == "invalid_api_key"


def test_a_rate_limit_is_a_rate_limit_error(keyed_gateway: KeyedGateway) -> None:
    wait_for_window(15)  # both requests in one minute window
    httpx.post(keyed_gateway.api + "/chat/completions", timeout=30,
               headers={"authorization": f"Bearer {keyed_gateway.limited_key}"},
               json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
               ).raise_for_status()
    error = node(keyed_gateway, "chat", key=keyed_gateway.limited_key)["error"]
    assert (error["class"], error["status"], error["code"], error["type"]) == \
        ("RateLimitError", 429, "rate_limit_exceeded", "requests")
    assert int(error["retry_after"]) >= 1 and REQUEST_ID.match(error["request_id"])


@pytest.mark.parametrize("scenario", ["chat", "responses"])
def test_an_unknown_model_is_not_found(keyed_gateway: KeyedGateway, scenario: str) -> None:
    error = node(keyed_gateway, scenario, model="nope")["error"]
    assert (error["class"], error["status"], error["code"], error["param"]) == \
        ("NotFoundError", 404, "model_not_found", "model")
    assert keyed_gateway.gw.record(error["request_id"])["error_code"] == "model_not_found"
