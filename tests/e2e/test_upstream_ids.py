"""Request ids sent upstream never break a backend, and a backend's refusal reaches the client
in OpenAI's shape — against the test upstream told to behave like llama-cpp-python's server
(which answers 400 with an empty body to any x-request-id that is not a UUID)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from gatehouse.telemetry.ids import request_id_as_uuid
from tests.e2e.conftest import upstream_cfg
from tests.support.procs import Gateway, Upstream

HELLO = [{"role": "user", "content": "hello"}]


def gateway_on(start_gateway: Callable[..., Gateway], up: Upstream, **upstream: Any) -> Gateway:
    return start_gateway({"upstreams": {"a": upstream_cfg(up, **upstream)},
                          "models": {"m": {"backends": [{"upstream": "a",
                                                         "model": "test-model"}]}}})


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_the_default_header_is_accepted_by_a_uuid_only_server(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    up_a.control(uuid_request_ids=True)
    gw = gateway_on(start_gateway, up_a)
    reply = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
    assert reply.http_response.status_code == 200
    ours = reply.headers["x-request-id"]
    seen = up_a.stats()["last_headers"]
    assert seen["x-client-request-id"] == ours and "x-request-id" not in seen
    record = gw.record(ours)
    assert record["upstream_request_id"].startswith("a-")  # the backend's own id, logged


def test_ids_as_uuids_in_x_request_id(start_gateway: Callable[..., Gateway],
                                      up_a: Upstream) -> None:
    up_a.control(uuid_request_ids=True)
    gw = gateway_on(start_gateway, up_a, request_id_header="x-request-id",
                    request_id_format="uuid")
    reply = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
    ours = reply.headers["x-request-id"]
    assert up_a.stats()["last_headers"]["x-request-id"] == request_id_as_uuid(ours)


def test_configured_headers_win(start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    gw = gateway_on(start_gateway, up_a, headers={"X-Client-Request-Id": "fixed-by-operator"})
    sdk(gw).chat.completions.create(model="m", messages=HELLO)
    assert up_a.stats()["last_headers"]["x-client-request-id"] == "fixed-by-operator"


def test_an_empty_refusal_reaches_the_client_in_openai_shape(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    up_a.control(uuid_request_ids=True)
    gw = gateway_on(start_gateway, up_a, request_id_header="x-request-id")  # not a UUID
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(model="m", messages=HELLO)
    error = caught.value
    assert error.status_code == 400 and error.request_id
    assert error.code == "upstream_400"
    assert "refused the request with HTTP 400 and no explanation" in error.message


def test_a_plain_text_refusal_keeps_its_words(start_gateway: Callable[..., Gateway],
                                              up_a: Upstream) -> None:
    up_a.control(status=422, raw_error="model  'x' is not loaded\n")
    gw = gateway_on(start_gateway, up_a)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk(gw).chat.completions.create(model="m", messages=HELLO)
    assert caught.value.message.endswith("HTTP 422: model 'x' is not loaded.")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_422"


def test_a_cookie_one_answer_sets_is_not_sent_with_the_next_users_request(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """The gateway calls a backend for many users over one client session: a cookie the
    backend sets in answer to one user's request (a load balancer's, a proxy's session) must
    not travel with everyone's next request, nor pile up in the gateway's memory. By host
    name: aiohttp's cookie jar refuses cookies from IP addresses, so 127.0.0.1 hides this."""
    up_a.control(set_cookie="sid=user-a-session; Path=/")
    gw = start_gateway({"upstreams": {"a": {"base_url": up_a.url.replace("127.0.0.1",
                                                                         "localhost") + "/v1"}},
                        "models": {"m": {"backends": [{"upstream": "a",
                                                       "model": "test-model"}]}}})
    client = sdk(gw)
    before = up_a.stats()["requests"]
    for _ in range(2):
        reply = client.chat.completions.with_raw_response.create(model="m", messages=HELLO)
        assert "set-cookie" not in reply.headers  # nor does it reach the client
    assert up_a.stats()["requests"] == before + 2
    assert "cookie" not in up_a.stats()["last_headers"]
