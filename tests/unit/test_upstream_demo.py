"""The demo backend never does unbounded work for one request (issue 12)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from gatehouse.config import DemoSettings
from gatehouse.quota.policy import estimate
from gatehouse.upstream import tokens
from gatehouse.upstream.backend import UpstreamCall
from gatehouse.upstream.demo import MAX_VALUES, DemoBackend
from gatehouse.upstream.tokens import (
    EXACT_UP_TO,
    count_tokens,
    count_tokens_in,
    split_tokens,
)


async def ask(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
    demo = DemoBackend(DemoSettings(), seed=1)
    reply = await demo.open(UpstreamCall(endpoint, orjson.dumps(body), False, "req_0123456789"))
    return reply.status, orjson.loads(await reply.read())


async def test_the_largest_embeddings_answer_and_one_more() -> None:
    status, answer = await ask("embeddings", {"model": "demo", "input": ["x"] * 2048})
    assert status == 200 and len(answer["data"]) * len(answer["data"][0]["embedding"]) \
        == MAX_VALUES
    status, answer = await ask("embeddings", {"model": "demo", "input": ["x"] * 8,
                                              "dimensions": MAX_VALUES // 8 + 1})
    assert status == 400
    assert answer["error"]["param"] == "dimensions"
    assert answer["error"]["type"] == "invalid_request_error"
    status, answer = await ask("embeddings", {"model": "demo", "input": ["x"] * 2049})
    assert status == 400 and answer["error"]["param"] == "input"


async def test_the_bomb_allocates_nothing_before_refusing() -> None:
    body = {"model": "demo", "input": ["x"] * 1500, "dimensions": 16384}
    tracemalloc.start()
    try:
        status, _ = await ask("embeddings", body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 400 and peak < 5_000_000


async def test_a_long_input_is_hashed_once_and_vectors_stay_unit_length() -> None:
    long = "word " * 1_000_000
    status, answer = await ask("embeddings", {"model": "demo", "input": [long, "b", long],
                                              "dimensions": 16384 // 4})
    assert status == 200
    first, second, third = (item["embedding"] for item in answer["data"])
    assert first == third != second
    assert abs(sum(v * v for v in first) - 1) < 1e-6
    assert abs(answer["usage"]["prompt_tokens"] - 2_000_001) < 20_000


async def test_token_id_inputs_are_one_input_each_and_counted_as_given() -> None:
    status, answer = await ask("embeddings", {"model": "demo", "input": list(range(3000))})
    assert status == 200 and len(answer["data"]) == 1
    assert answer["usage"]["prompt_tokens"] == 3000
    status, answer = await ask("embeddings", {"model": "demo", "input": [[1, 2], [3]]})
    assert len(answer["data"]) == 2 and answer["usage"]["prompt_tokens"] == 3


@pytest.mark.parametrize("prompt, tokens", [
    (list(range(100_000)), 100_000), ([[1, 2, 3], [4]], 4), (["a b", "c"], 3)])
async def test_completion_prompts_of_token_ids_are_counted_not_stringified(
        prompt: Any, tokens: int) -> None:
    status, answer = await ask("completions", {"model": "demo", "prompt": prompt,
                                               "max_tokens": 5})
    assert status == 200 and answer["usage"]["prompt_tokens"] == tokens
    assert answer["usage"]["completion_tokens"] == 5


async def test_a_reply_never_exceeds_reply_tokens_whatever_max_tokens_asks() -> None:
    for content in ("hi", " ", "\u200b"):
        status, answer = await ask("chat.completions", {
            "model": "demo", "messages": [{"role": "user", "content": content}],
            "max_tokens": 10_000_000})
        assert status == 200
        assert answer["usage"]["completion_tokens"] == DemoSettings().reply_tokens


def test_many_texts_are_counted_on_a_bounded_sample() -> None:
    texts = ["a b c d"] * 10
    assert count_tokens_in(texts) == 40 == sum(map(count_tokens, texts))
    many = ["one two, three"] * 100_000  # 1.4 million characters, 4 tokens each
    assert abs(count_tokens_in(many) - 400_000) < 100
    huge = "x " * EXACT_UP_TO
    assert count_tokens_in([huge, huge]) == 2 * count_tokens(huge)  # the second one scaled
    assert count_tokens_in([]) == 0


def test_the_quota_estimate_walks_any_depth_without_recursion() -> None:
    deep: Any = "four"
    for _ in range(100_000):
        deep = [deep]
    assert estimate({"input": deep}, 16).prompt == 1 + 4
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400}]}]}
    assert estimate(parts, 16).prompt == 100 + 4


class _Spy:
    """Stands in for the tokenizer's pattern and records what it is asked to scan."""

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern
        self.texts: list[str] = []

    def findall(self, text: str, *args: Any) -> list[str]:
        self.texts.append(text)
        return list(self.pattern.findall(text, *args))


def test_the_tokenizer_never_scans_trailing_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    # where the pattern is quadratic: each position's \s* runs to the end and fails
    # (8,000 trailing spaces took 5.7 s, a 200,000-space message hours)
    spy = _Spy(tokens._TOKEN)
    monkeypatch.setattr(tokens, "_TOKEN", spy)
    for text in (" " * 300_000, "a" + " " * 300_000 + "b", "x \u3000\n", "\u00a0" * 10):
        count_tokens(text)
        count_tokens_in([text, "y "])
        split_tokens(text)
    assert spy.texts and not any(t[-1:].isspace() for t in spy.texts)
    assert split_tokens("  hello, world  ") == ["  hello", ",", " world"]
    assert count_tokens(" " * 300_000) == 0


async def test_a_whitespace_message_is_answered() -> None:
    status, answer = await ask("chat.completions", {
        "model": "demo", "messages": [{"role": "user", "content": " " * 200_000}]})
    assert status == 200 and answer["usage"]["prompt_tokens"] == 4


async def test_the_demo_honours_n(gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    client = await gateway_client()
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "n": 3,
            "max_tokens": 4}
    r = (await client.post("/v1/chat/completions", json=body)).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in r["choices"]}) == 1
    assert r["usage"]["completion_tokens"] == 3 * 4
    streamed = await client.post("/v1/chat/completions",
                                 json={**body, "stream": True,
                                       "stream_options": {"include_usage": True}})
    texts = ["", "", ""]
    finished = set()
    usage = None
    for line in streamed.text.splitlines():
        if not line.startswith("data: {"):
            continue
        chunk = orjson.loads(line[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert texts[0] and texts == [texts[0]] * 3 and finished == {0, 1, 2}
    assert usage is not None and usage["completion_tokens"] == 12
