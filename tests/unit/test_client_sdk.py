"""The SDK's answers that are not the endpoint's: a proxy's page, a redirect, a blank or broken
body, the wrong JSON. Each raised a bare ``JSONDecodeError``, ``KeyError`` or ``TypeError``
with no request id; now :class:`MalformedAnswer` (an ``APIError``) saying what came back."""

from __future__ import annotations

import http.server

import pytest

from gatehouse.client import APIError, AsyncClient, Client, MalformedAnswer
from tests.support.doctor import Handler, answer, hostile

SIGN_IN = b"<html><head><title>Acme Sign-in</title></head><body>Sign in</body></html>"
IDS = {"x-request-id": "req_proxy_1"}


def answering(status: int, body: bytes, **headers: str) -> Handler:
    return answer(body, status, {**IDS, **{k.replace("_", "-"): v for k, v in headers.items()}})


CASES = [
    (answering(200, SIGN_IN, content_type="text/html"), "text/html, not JSON; page title"),
    (answering(302, b"", location="https://sso.example.com/login"),
     "HTTP 302, which is not an answer; no content type; a redirect to https://sso.example.com"),
    (answering(204, b""), "HTTP 204 with no body"),
    (answering(200, b'{"choices": ', content_type="application/json"), "not JSON"),
    (answering(200, b"[1, 2]", content_type="application/json"), "JSON that is not an object"),
    (answering(200, b'{"id": "x"}', content_type="application/json"), "an object without"),
]


def served(handler: Handler) -> dict[str, Handler]:
    return {"/v1/chat/completions": handler, "/v1/models": handler, "/v1/usage": handler}


@pytest.mark.parametrize(("handler", "said"), CASES)
def test_sync_client_says_what_came_back(handler: Handler, said: str) -> None:
    with hostile(served(handler)) as base, Client(base + "/v1", api_key="gh-k") as client:
        calls = [lambda: client.chat("demo", [{"role": "user", "content": "hi"}]),
                 client.models]
        for made in calls:
            with pytest.raises(MalformedAnswer) as caught:
                made()
            error = caught.value
            assert isinstance(error, APIError) and error.request_id == "req_proxy_1"
            assert error.client_request_id and error.status is not None
            assert error.code == "malformed_answer" and error.attempts == 1
            if "without" not in said:
                assert said in str(error), str(error)


async def test_async_client_and_usage_too() -> None:
    handler = answering(200, SIGN_IN, content_type="text/html")
    with hostile(served(handler)) as base:
        async with AsyncClient(base + "/v1", api_key="gh-k") as client:
            for made in (client.models, client.usage):
                with pytest.raises(MalformedAnswer, match="page title") as caught:
                    await made()
                assert caught.value.request_id == "req_proxy_1"


def test_the_endpoints_answers_still_pass() -> None:
    chat = (b'{"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", '
            b'"content": "p"}}]}')
    routes = {"/v1/chat/completions": answer(chat), "/v1/models": answer(b'{"data": []}'),
              "/v1/usage": answer(b'{"org": "acme"}')}
    with hostile(routes) as base, Client(base + "/v1", api_key="gh-k") as client:
        assert client.chat("demo", [{"role": "user", "content": "hi"}])["id"] == "c"
        assert client.models() == [] and client.usage() == {"org": "acme"}


def test_a_redirect_is_not_followed() -> None:
    followed: list[str] = []

    def login(h: http.server.BaseHTTPRequestHandler) -> None:
        followed.append(h.path)
        answer(b'{"data": []}')(h)

    routes = {"/v1/models": answering(307, b"", location="/login"), "/login": login}
    with hostile(routes) as base, Client(base + "/v1") as client, \
            pytest.raises(MalformedAnswer, match="307"):
        client.models()
    assert followed == []
