"""What a request is reserved for before it runs (gatehouse/quota/policy.py ``estimate``), and
what the gateway charges for its prompt when a backend reports no usage: every piece of the
request the model reads. Each case below was charged a few tokens for thousands sent."""

from __future__ import annotations

from typing import Any

from gatehouse.quota.policy import estimate, prompt_texts, token_ids

WORDS = " ".join(["word"] * 4000)  # 19,999 characters: ≈ 5,000 tokens at 4 a token


def test_tool_calls_beside_a_null_content_are_read() -> None:
    body = {"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": WORDS}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]}
    assert WORDS in prompt_texts(body)
    assert estimate(body, 16).prompt > 4900


def test_tool_definitions_are_read() -> None:
    tools = [{"type": "function", "function": {"name": f"t{i}", "description": WORDS,
                                               "parameters": {"type": "object"}}}
             for i in range(5)]
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    assert estimate(body, 16).prompt > 5 * 4900
    legacy = {"messages": body["messages"], "functions": [t["function"] for t in tools]}
    assert estimate(legacy, 16).prompt > 5 * 4900


def test_token_ids_are_a_token_each() -> None:
    assert token_ids({"prompt": list(range(50_000))}) == 50_000
    assert token_ids({"input": [[1, 2, 3], [4, 5]]}) == 5
    assert token_ids({"prompt": "text", "input": ["a", "b"]}) == 0
    assert token_ids({"input": [True, 1]}) == 1  # a boolean is no token id
    assert estimate({"prompt": list(range(50_000)), "max_tokens": 1}, 16).prompt >= 50_000


def test_each_completions_prompt_gets_its_own_answer() -> None:
    one = estimate({"prompt": "a", "max_tokens": 10}, 16)
    three = estimate({"prompt": ["a", "b", "c"], "max_tokens": 10, "n": 2}, 16)
    assert (one.completion, three.completion) == (10, 60)
    ids = estimate({"prompt": [1, 2, 3], "max_tokens": 10}, 16)  # one prompt of token ids
    assert ids.completion == 10


def test_responses_items_are_read_whole() -> None:
    body = {"input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\": 1}"},
        {"type": "function_call_output", "call_id": "c", "output": "result"}],
        "instructions": "be brief"}
    assert sorted(prompt_texts(body)) == sorted(["q", "{\"a\": 1}", "result", "be brief"])
