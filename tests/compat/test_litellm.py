"""The gateway in front of two LiteLLM proxies answering with ``mock_response`` models. LiteLLM
reports usage in streams when asked (the gateway asks on the client's behalf), on a last chunk
that also has ``choices``; its errors are OpenAI-shaped already; its own id for a call is
``x-litellm-call-id``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest

from gatehouse.quota.tokenizer import load
from tests.compat.checks import QUESTION, Checks, Compat, start_gateway
from tests.compat.servers import MASTER_KEY, MOCK_ANSWER, litellm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    tmp = tmp_path_factory.mktemp("litellm")
    first, second = litellm(tmp, "litellm-first"), litellm(tmp, "litellm-second")
    try:
        first.wait(), second.wait()
        gw, admin, key = start_gateway(
            tmp, first, second, "mock", "o200k_base", api_key_env="LITELLM_KEY",
            env={"LITELLM_KEY": MASTER_KEY},
            models={"bad": {"backends": [{"upstream": "first", "model": "no-such-model"}]}})
        yield Compat(gw, admin, key, first, second, "mock", load("o200k_base"))
        gw.stop()
    finally:
        first.stop()
        second.stop()


class TestLiteLLM(Checks):
    stream_usage = True

    def test_the_mock_answer_and_litellms_call_id(self, c: Compat) -> None:
        with c.sdk() as sdk:
            raw = sdk.chat.completions.with_raw_response.create(model="m", messages=QUESTION)
        assert raw.parse().choices[0].message.content == MOCK_ANSWER
        assert "x-litellm-call-id" not in raw.headers  # the backend's headers stay inside...
        record = c.gw.record(raw.headers["x-request-id"])
        uuid.UUID(record["upstream_request_id"])  # ...where its own id for the call is logged

    def test_litellms_refusal_keeps_its_status_and_words(self, c: Compat) -> None:
        with c.sdk() as sdk, pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="bad", messages=QUESTION)
        error = caught.value
        assert error.status_code == 400 and "Invalid model name" in error.message
        assert error.request_id  # the gateway's id
        record = c.gw.record(error.request_id)
        assert (record["status"], record["backend"], record["attempts"]) == \
            (400, "first", ["first"])
