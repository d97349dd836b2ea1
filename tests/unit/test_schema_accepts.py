"""Valid OpenAI requests must pass the checks untouched; odd types must be 4xx, never 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gatehouse.schema.bodies import check_chat, check_completion, check_embedding

VALID_CHAT: list[dict[str, Any]] = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                {"role": "user", "content": [
                                    {"type": "text", "text": "what is this?"},
                                    {"type": "image_url", "image_url": {"url": "data:x"}}]}]},
    {"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
     "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}],
     "tool_choice": "auto", "parallel_tool_calls": False},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5,
     "n": 2, "stop": ["\n"], "logprobs": True, "top_logprobs": 3, "temperature": 0,
     "top_p": 1, "seed": 7, "response_format": {"type": "json_object"}, "user": "u1",
     "stream": True, "stream_options": {"include_usage": True}, "metadata": {"k": "v"},
     "reasoning_effort": "low", "service_tier": "auto", "stop_sequences_vendor_ext": 1},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "END",
     "max_tokens": None, "stream": False, "stream_options": None},
]


@pytest.mark.parametrize("body", VALID_CHAT)
def test_valid_chat_requests_pass(body: dict[str, Any]) -> None:
    check_chat(body)


@pytest.mark.parametrize("body", [
    {"model": "m", "prompt": "x"}, {"model": "m", "prompt": ["a", "b"]},
    {"model": "m", "prompt": [1, 2, 3], "max_tokens": 5, "echo": True, "suffix": "s"},
])
def test_valid_completions_pass(body: dict[str, Any]) -> None:
    check_completion(body)


@pytest.mark.parametrize("body", [
    {"model": "m", "input": "x"}, {"model": "m", "input": ["a", "b"], "dimensions": 256},
    {"model": "m", "input": [[1, 2], [3]], "encoding_format": "base64"},
])
def test_valid_embeddings_pass(body: dict[str, Any]) -> None:
    check_embedding(body)


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": ["user"], "content": "x"}]}),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": {"a": 1}, "content": "x"}]}),
    ("/v1/chat/completions", {"model": "demo", "messages": [
        {"role": "user", "content": [{"type": "text", "text": None}]}]}),
    ("/v1/chat/completions", {"model": "demo", "messages": [
        {"role": "user", "content": [{"type": "text", "text": 5}]}]}),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user", "content": ["x"]}]}),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user", "content": [{}]}]}),
    ("/v1/chat/completions", {"model": ["demo"], "messages": [{"role": "user"}]}),
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": "user"}],
                              "stream": True, "stream_options": {"include_usage": "yes"}}),
    ("/v1/completions", {"model": "demo", "prompt": "x", "max_completion_tokens": "abc"}),
    ("/v1/completions", {"model": "demo", "prompt": "x", "max_tokens": [1]}),
    ("/v1/embeddings", {"model": "demo", "input": "x", "dimensions": 100_000_000}),
    ("/v1/embeddings", {"model": "demo", "input": "x", "dimensions": "big"}),
])
async def test_odd_types_are_4xx_never_500(demo: httpx.AsyncClient, path: str,
                                           body: dict[str, Any]) -> None:
    response = await demo.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["param"]


async def test_demo_handles_content_parts_and_huge_prompts(demo: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}}]
    response = await demo.post("/v1/chat/completions", json={
        "model": "demo", "messages": [{"role": "user", "content": parts}]})
    assert response.status_code == 200 and "hello" in response.text
    big = "word " * 1_500_000
    response = await demo.post("/v1/chat/completions", json={
        "model": "demo", "messages": [{"role": "user", "content": big}], "max_tokens": 3})
    assert response.status_code == 200
    assert abs(response.json()["usage"]["prompt_tokens"] - 1_500_004) < 1000
