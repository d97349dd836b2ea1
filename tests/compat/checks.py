"""What every third-party server behind the gateway is checked for, through the official openai
SDK: plain answers, streams with and without usage, failover when a server is killed, and
metering equal to the server's own counts (or the gateway tokenizer's where the server reports
none) in the access log and the usage history. Each server's module subclasses ``Checks``
and gives the ``compat`` fixture; errors are each server's own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from gatehouse.quota.tokenizer import Tokenizer
from tests.compat.servers import Server
from tests.e2e.test_metering import acme_keys, history
from tests.support.procs import Gateway

QUESTION = [{"role": "user", "content": "hello world, how are you today?"}]
STREAMS = 8  # sync SDK streams read to the end: each must be logged complete (not 499)


@dataclass(slots=True)
class Compat:
    gw: Gateway
    admin: dict[str, str]
    key: str
    first: Server
    second: Server
    model: str  # the name the servers know the model by
    tokenizer: Tokenizer  # what the gateway counts this model with

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gw.url + "/v1", api_key=self.key, max_retries=0)

    def direct(self, server: Server | None = None) -> openai.OpenAI:
        """The SDK talking to a server itself, for the server's own counts."""
        server = server or self.first
        return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key,
                             max_retries=0)

    def gateway_count(self, messages: list[dict[str, str]], text: str) -> tuple[int, int]:
        """(prompt, completion) as the gateway counts them: its tokenizer, + 4 a message."""
        return (self.tokenizer.count([m["content"] for m in messages]) + 4 * len(messages),
                self.tokenizer.count([text]))


def start_gateway(tmp: Path, first: Server, second: Server, model: str, tokenizer: str,
                  upstreams: dict[str, Any] | None = None, models: dict[str, Any] | None = None,
                  env: dict[str, str] | None = None, **upstream: Any
                  ) -> tuple[Gateway, dict[str, str], str]:
    """A gateway with keys whose models ``m`` (most checks) and ``metered`` (the usage
    history's) go to ``first``, then (when it fails) ``second``; a server's module adds its
    own ``upstreams`` and ``models`` for its errors."""
    both = [{"upstream": "first", "model": model, "weight": 1e9},
            {"upstream": "second", "model": model, "weight": 1e-9}]
    gw = Gateway(tmp, {
        "identity": {"require_key": True},
        "upstreams": {"first": {"base_url": first.url + "/v1", **upstream},
                      "second": {"base_url": second.url + "/v1", **upstream},
                      **(upstreams or {})},
        "models": {"m": {"backends": both, "tokenizer": tokenizer},
                   "metered": {"backends": both, "tokenizer": tokenizer}, **(models or {})}},
        env=env, start_timeout=120)
    return (gw, *acme_keys(gw))


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


class Checks:
    stream_usage: bool  # the server reports usage in streams when asked (include_usage)

    @pytest.fixture
    def c(self, compat: Compat) -> Compat:
        return compat

    def test_plain(self, c: Compat) -> None:
        with c.sdk() as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="m", messages=QUESTION, max_tokens=12, temperature=0)
        answer = raw.parse()
        assert answer.choices[0].message.content and answer.usage is not None
        record = c.gw.record(raw.headers["x-request-id"])
        assert (record["status"], record["outcome"], record["backend"]) == (200, "ok", "first")
        assert (record["prompt_tokens"], record["completion_tokens"], record["usage_counted_by"]) \
            == (answer.usage.prompt_tokens, answer.usage.completion_tokens, "upstream")
        with c.direct() as direct:  # the server's own count of the same request
            own = direct.chat.completions.create(model=c.model, messages=QUESTION,
                                                 max_tokens=12, temperature=0)
        assert own.usage is not None
        assert (own.usage.prompt_tokens, own.usage.completion_tokens) == \
            (answer.usage.prompt_tokens, answer.usage.completion_tokens)

    def test_stream_with_usage(self, c: Compat) -> None:
        with c.sdk() as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="m", messages=QUESTION, max_tokens=12, stream=True,
                stream_options={"include_usage": True})
            chunks = list(raw.parse())
        text = text_of(chunks)
        assert text
        record = c.gw.record(raw.headers["x-request-id"])
        assert (record["status"], record["outcome"]) == (200, "ok")
        reported = [ch.usage for ch in chunks if ch.usage]
        if self.stream_usage:
            assert len(reported) == 1
            assert (record["prompt_tokens"], record["completion_tokens"],
                    record["usage_counted_by"]) == (reported[0].prompt_tokens,
                                                    reported[0].completion_tokens, "upstream")
        else:  # asked for, not given: the gateway counted what it passed on
            assert reported == []
            assert (record["prompt_tokens"], record["completion_tokens"],
                    record["usage_counted_by"]) == (*c.gateway_count(QUESTION, text), "gateway")

    def test_streams_without_usage_are_metered_and_complete(self, c: Compat) -> None:
        """``stream_options`` absent: no chunk carries usage, yet each stream is metered, and
        the sync SDK leaving right after [DONE] leaves each logged complete (200, ok)."""
        ids, texts = [], []
        with c.sdk() as sdk:
            for _ in range(STREAMS):
                raw = sdk.chat.completions.with_raw_response.create(
                    model="m", messages=QUESTION, max_tokens=8, stream=True)
                chunks = list(raw.parse())
                raw.http_response.close()
                assert all(ch.usage is None for ch in chunks)
                ids.append(raw.headers["x-request-id"])
                texts.append(text_of(chunks))
        for request_id, text in zip(ids, texts, strict=True):
            record = c.gw.record(request_id)
            assert (record["status"], record["outcome"]) == (200, "ok"), record
            counted = (record["prompt_tokens"], record["completion_tokens"])
            if self.stream_usage:
                assert record["usage_counted_by"] == "upstream"
                assert counted == self.server_stream_usage(c)
            else:
                assert record["usage_counted_by"] == "gateway"
                assert counted == c.gateway_count(QUESTION, text)

    def server_stream_usage(self, c: Compat) -> tuple[int, int]:
        """What the server itself reports for the streams above."""
        with c.direct() as direct:
            chunks = list(direct.chat.completions.create(
                model=c.model, messages=QUESTION, max_tokens=8, stream=True,
                stream_options={"include_usage": True}))
        (usage,) = [ch.usage for ch in chunks if ch.usage]
        return usage.prompt_tokens, usage.completion_tokens

    def test_usage_history_equals_what_was_metered(self, c: Compat) -> None:
        """A plain answer, a stream with usage and one without, on their own model: the usage
        history (admin API) holds the three, with the tokens each was metered."""
        ids = []
        with c.sdk() as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="metered", messages=QUESTION, max_tokens=10)
            ids.append(raw.headers["x-request-id"])
            for options in ({"include_usage": True}, None):
                extra = {"stream_options": options} if options else {}
                stream = sdk.chat.completions.with_raw_response.create(
                    model="metered", messages=QUESTION, max_tokens=10, stream=True, **extra)
                list(stream.parse())
                ids.append(stream.headers["x-request-id"])
        records = [c.gw.record(i) for i in ids]
        row = history(c.gw, c.admin, 3, model="metered")
        assert row["requests"] == 3
        assert row["prompt_tokens"] == sum(r["prompt_tokens"] for r in records)
        assert row["completion_tokens"] == sum(r["completion_tokens"] for r in records)
        by_gateway = sum(r["usage_counted_by"] == "gateway" for r in records)
        assert row["gateway_counted_requests"] == by_gateway == (0 if self.stream_usage else 2)

    def test_the_responses_api_through_the_chat_bridge(self, c: Compat) -> None:
        """``/v1/responses`` to a server configured as chat-only (``[upstreams.X] api =
        "chat"``, the default): translated there and back, plain and streamed, and metered
        like the chat calls."""
        with c.sdk() as sdk:
            raw = sdk.responses.with_raw_response.create(
                model="m", input="Count to three.", instructions="Answer briefly.",
                max_output_tokens=12, temperature=0)
            answer = raw.parse()
            events = list(sdk.responses.create(model="m", input="Count to three.",
                                               max_output_tokens=12, stream=True))
        assert answer.status in ("completed", "incomplete") and answer.output_text
        assert answer.usage is not None and answer.usage.output_tokens > 0
        record = c.gw.record(raw.headers["x-request-id"])
        assert (record["status"], record["outcome"], record["backend"]) == (200, "ok", "first")
        assert (record["prompt_tokens"], record["completion_tokens"]) == \
            (answer.usage.input_tokens, answer.usage.output_tokens)
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created", kinds
        assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
        final = events[-1].response  # type: ignore[union-attr]
        deltas = "".join(e.delta for e in events  # type: ignore[union-attr]
                         if e.type == "response.output_text.delta")
        assert deltas and deltas == final.output_text
        assert final.usage is not None and final.usage.output_tokens > 0

    def test_failover_when_the_first_server_is_killed(self, c: Compat) -> None:
        c.first.kill()
        try:
            with c.sdk() as sdk:
                raw = sdk.chat.completions.with_raw_response.create(
                    model="m", messages=QUESTION, max_tokens=8)
                stream = sdk.chat.completions.with_raw_response.create(
                    model="m", messages=QUESTION, max_tokens=8, stream=True)
                assert text_of(list(stream.parse()))
        finally:
            c.first.restart()
        assert raw.parse().choices[0].message.content
        for request_id in (raw.headers["x-request-id"], stream.headers["x-request-id"]):
            record = c.gw.record(request_id)
            assert (record["status"], record["backend"]) == (200, "second"), record
            assert record["attempts"] == ["first:ConnectFailed", "second"]
