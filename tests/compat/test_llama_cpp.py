"""The gateway in front of two llama-cpp-python servers running a tiny random GGUF model made
by the test, whose tokenizer.json the gateway counts with. The server reports no usage in
streams (asked or not): the gateway counts them. It refuses any ``x-request-id`` that is not a
UUID with an empty 400."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from gatehouse.quota.tokenizer import load
from gatehouse.telemetry.ids import request_id_as_uuid
from tests.compat.checks import QUESTION, Checks, Compat, start_gateway
from tests.compat.servers import llama_cpp, tiny_model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    tmp = tmp_path_factory.mktemp("llama")
    tokenizer, model = tiny_model(tmp)
    first, second = llama_cpp(tmp, model, "llama-first"), llama_cpp(tmp, model, "llama-second")
    try:
        first.wait(), second.wait()
        base = first.url + "/v1"
        gw, admin, key = start_gateway(
            tmp, first, second, "tiny", str(tokenizer),
            upstreams={"uuids": {"base_url": base, "request_id_header": "x-request-id",
                                 "request_id_format": "uuid"},
                       "plain-ids": {"base_url": base, "request_id_header": "x-request-id"}},
            models={"uuids": {"backends": [{"upstream": "uuids", "model": "tiny"}]},
                    "plain-ids": {"backends": [{"upstream": "plain-ids", "model": "tiny"}]}})
        yield Compat(gw, admin, key, first, second, "tiny", load(str(tokenizer)))
        gw.stop()
    finally:
        first.stop()
        second.stop()


class TestLlamaCpp(Checks):
    stream_usage = False

    def test_the_default_id_header_is_accepted_and_the_servers_id_logged(self, c: Compat
                                                                         ) -> None:
        with c.sdk() as sdk:
            raw = sdk.chat.completions.with_raw_response.create(model="m", messages=QUESTION,
                                                                max_tokens=4)
        assert raw.http_response.status_code == 200
        record = c.gw.record(raw.headers["x-request-id"])
        assert len(record["upstream_request_id"]) == 32  # the server's own (a UUID's hex)

    def test_ids_sent_as_uuids_in_x_request_id(self, c: Compat) -> None:
        with c.sdk() as sdk:
            raw = sdk.chat.completions.with_raw_response.create(model="uuids",
                                                                messages=QUESTION, max_tokens=4)
        ours = raw.headers["x-request-id"]
        # the server takes the id and answers with it: both logs can be joined
        assert c.gw.record(ours)["upstream_request_id"] == request_id_as_uuid(ours)

    def test_its_empty_400_reaches_the_client_in_openai_shape(self, c: Compat) -> None:
        with c.sdk() as sdk, pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="plain-ids", messages=QUESTION, max_tokens=4)
        error = caught.value
        assert error.status_code == 400 and error.code == "upstream_400"
        assert "refused the request with HTTP 400 and no explanation" in error.message

    def test_a_prompt_beyond_its_context_keeps_the_servers_status_and_words(self, c: Compat
                                                                            ) -> None:
        long = [{"role": "user", "content": "hello world " * 400}]
        with c.sdk() as sdk, pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="m", messages=long, max_tokens=4)
        assert caught.value.status_code == 400
        assert "context" in caught.value.message
