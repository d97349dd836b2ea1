"""LangChain's ``ChatOpenAI`` (langchain-openai) pointed at a real ``gatehouse serve``: invoke,
stream, batch, tool binding, the Responses API, and our errors surfacing as the openai SDK's
exceptions with our request id — one gateway for the module.

langchain-openai pulls in tiktoken, which downloads its encodings on first use. Nothing here
may use it (no network beyond 127.0.0.1): tiktoken's cache is pointed at an empty folder, so a
use would try to download — failing offline — and a download that worked would leave a file
there, which the module checks for at its end."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from langchain_core.exceptions import ModelAuthenticationError, ModelNotFoundError
from langchain_core.messages import AIMessage, AIMessageChunk

from tests.e2e.conftest import KeyedGateway
from tests.support.procs import Upstream

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

pytestmark = pytest.mark.e2e

REQUEST_ID = re.compile(r"^req_[0-9a-z]{26}$")
REPLY = "a w1 w2 w3 w4 w5 w6 w7"  # the test upstream's answer: 8 words, 8 tokens
WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module", autouse=True)
def _offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        for tracing in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
            env.delenv(tracing, raising=False)  # no traces sent anywhere
        yield
    assert not list(cache.iterdir()), "tiktoken fetched an encoding: a test used the network"


def chat(kg: KeyedGateway, **kwargs: Any) -> ChatOpenAI:
    """A ChatOpenAI with a connection pool of its own: LangChain's shared default pool would
    be closed with the first test's client (conftest closes every client a test makes)."""
    settings: dict[str, Any] = {"model": "m", "base_url": kg.api, "api_key": kg.key,
                                "max_retries": 0, "timeout": 20, "stream_usage": True,
                                "include_response_headers": True,
                                "http_client": openai.DefaultHttpxClient(), **kwargs}
    from langchain_openai import ChatOpenAI  # 1.5 s: not at collection, in every worker

    return ChatOpenAI(**settings)


def joined(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    return functools.reduce(operator.add, chunks)


def test_invoke_with_usage_and_request_id(keyed_gateway: KeyedGateway) -> None:
    answer = chat(keyed_gateway).invoke("hello there")
    assert isinstance(answer, AIMessage) and answer.content == REPLY
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 8
    rid = answer.response_metadata["headers"]["x-request-id"]
    record = keyed_gateway.gw.record(rid)
    assert (record["status"], record["completion_tokens"]) == (200, 8)
    assert record["prompt_tokens"] == answer.usage_metadata["input_tokens"]


def test_stream_arrives_in_chunks_with_usage(keyed_gateway: KeyedGateway) -> None:
    chunks = list(chat(keyed_gateway).stream("hello there"))
    assert [c.content for c in chunks if c.content] == REPLY.replace(" ", "\n ").split("\n")
    whole = joined(chunks)
    assert whole.content == REPLY
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 8
    record = keyed_gateway.gw.record(whole.response_metadata["headers"]["x-request-id"])
    assert (record["stream"], record["completion_tokens"]) == (True, 8)


def test_batch(keyed_gateway: KeyedGateway, up_a: Upstream) -> None:
    before = up_a.stats()["by_path"].get("/v1/chat/completions", 0)
    answers = chat(keyed_gateway).batch(["one", "two", "three"])
    assert [a.content for a in answers] == [REPLY] * 3
    ids = {a.response_metadata["headers"]["x-request-id"] for a in answers}
    assert len(ids) == 3 and all(REQUEST_ID.match(i) for i in ids)
    assert up_a.stats()["by_path"]["/v1/chat/completions"] == before + 3


def test_bound_tools_are_called(keyed_gateway: KeyedGateway, up_a: Upstream) -> None:
    up_a.control(tool_call={"name": "weather", "arguments": '{"city": "Oslo"}'})
    llm = chat(keyed_gateway).bind_tools([WEATHER])
    answer = llm.invoke("Weather in Oslo?")
    assert up_a.stats()["last_body"]["tools"] == [WEATHER]
    assert isinstance(answer, AIMessage) and len(answer.tool_calls) == 1
    call = answer.tool_calls[0]
    assert (call["name"], call["args"]) == ("weather", {"city": "Oslo"})
    assert (call["id"] or "").startswith("call_")
    streamed = joined(list(llm.stream("Weather in Oslo?")))  # the arguments come in pieces
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("weather", {"city": "Oslo"})]


def test_responses_api(keyed_gateway: KeyedGateway) -> None:
    llm = chat(keyed_gateway, use_responses_api=True)
    answer = llm.invoke("knock knock")
    assert answer.text == REPLY
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 8
    record = keyed_gateway.gw.record(answer.response_metadata["headers"]["x-request-id"])
    assert (record["path"], record["status"]) == ("/v1/responses", 200)
    chunks = list(llm.stream("knock knock"))
    assert len([c for c in chunks if c.text]) == 8 and joined(chunks).text == REPLY


@pytest.mark.parametrize("change, error, langchain_error, status, code", [
    ({"api_key": "sk-not-a-key-at-all"}, openai.AuthenticationError, ModelAuthenticationError,
     401, "invalid_api_key"),
    ({"model": "nope"}, openai.NotFoundError, ModelNotFoundError, 404, "model_not_found"),
])
def test_errors_are_the_sdks_with_our_request_id(
        keyed_gateway: KeyedGateway, change: dict[str, str], error: type[openai.APIStatusError],
        langchain_error: type[Exception], status: int, code: str) -> None:
    with pytest.raises(error) as caught:
        chat(keyed_gateway, **change).invoke("hello")
    assert isinstance(caught.value, langchain_error)
    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert REQUEST_ID.match(caught.value.request_id or "")
    assert keyed_gateway.gw.record(caught.value.request_id or "")["error_code"] == code
