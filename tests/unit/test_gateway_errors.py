"""Every bad request gets a clear 4xx in OpenAI's error shape, with a request id — never a 500."""

from __future__ import annotations

import re

import httpx
import pytest

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hi"}]


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    assert body["error"]["message"]
    assert re.match(r"^req_[0-9a-z]{26}$", response.headers["x-request-id"])
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("payload, status, code, param", [
    (b"{not json", 400, "invalid_json", None),
    (b"", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_json", None),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_required_parameter", "model"),
    (b'{"model": 5, "messages": []}', 400, "invalid_type", "model"),
    (b'{"model": "demo"}', 400, "missing_required_parameter", "messages"),
    (b'{"model": "demo", "messages": {}}', 400, "invalid_type", "messages"),
    (b'{"model": "demo", "messages": []}', 400, "invalid_value", "messages"),
    (b'{"model": "demo", "messages": ["hi"]}', 400, "invalid_type", "messages[0]"),
    (b'{"model": "demo", "messages": [{"content": "x"}]}', 400, "missing_required_parameter",
     "messages[0].role"),
    (b'{"model": "demo", "messages": [{"role": "robot", "content": "x"}]}', 400, "invalid_value",
     "messages[0].role"),
    (b'{"model": "demo", "messages": [{"role": "user", "content": 5}]}', 400, "invalid_type",
     "messages[0].content"),
    (b'{"model": "demo", "messages": [{"role": "user"}], "stream": "yes"}', 400, "invalid_type",
     "stream"),
    (b'{"model": "demo", "messages": [{"role": "user"}], "stream_options": {}}', 400,
     "invalid_value", "stream_options"),
    (b'{"model": "demo", "messages": [{"role": "user"}], "max_tokens": 0}', 400, "invalid_value",
     "max_tokens"),
    (b'{"model": "demo", "messages": [{"role": "user"}], "max_tokens": true}', 400,
     "invalid_type", "max_tokens"),
    (b'{"model": "demo", "messages": [{"role": "user"}], "n": 1000}', 400, "invalid_value", "n"),
    (b'{"model": "demo", "messages": [{"role": "user"}], "stop": [1]}', 400, "invalid_type",
     "stop"),
    (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404,
     "model_not_found", "model"),
])
async def test_chat_body_errors(demo: httpx.AsyncClient, payload: bytes, status: int, code: str,
                                param: str | None) -> None:
    response = await demo.post(CHAT, content=payload,
                               headers={"content-type": "application/json"})
    assert_error(response, status, code, param)


@pytest.mark.parametrize("path, payload, code, param", [
    ("/v1/completions", {"model": "demo"}, "missing_required_parameter", "prompt"),
    ("/v1/completions", {"model": "demo", "prompt": 3}, "invalid_type", "prompt"),
    ("/v1/embeddings", {"model": "demo"}, "missing_required_parameter", "input"),
    ("/v1/embeddings", {"model": "demo", "input": []}, "invalid_value", "input"),
    ("/v1/embeddings", {"model": "demo", "input": "x", "encoding_format": "hex"},
     "invalid_value", "encoding_format"),
    ("/v1/embeddings", {"model": "demo", "input": "x", "stream": True}, "invalid_value", "stream"),
])
async def test_other_endpoint_errors(demo: httpx.AsyncClient, path: str, payload: dict[str, object],
                                     code: str, param: str) -> None:
    assert_error(await demo.post(path, json=payload), 400, code, param)


async def test_unknown_route_and_wrong_method(demo: httpx.AsyncClient) -> None:
    assert_error(await demo.get("/v1/nothing"), 404, "unknown_url")
    response = await demo.get(CHAT)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_body_over_limit_is_413_by_header_and_by_bytes(gateway_client) -> None:  # type: ignore[no-untyped-def]
    c = await gateway_client(server={"max_body_bytes": 2048})
    big = b'{"model": "demo", "messages": [{"role": "user", "content": "' + b"x" * 4096 + b'"}]}'
    assert_error(await c.post(CHAT, content=big), 413, "request_too_large")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"x" * 1024  # no content-length: counted as it arrives

    assert_error(await c.post(CHAT, content=chunks()), 413, "request_too_large")
    assert_error(await c.post(CHAT, content=b"{}", headers={"content-length": "abc"}), 400,
                 "invalid_value", "Content-Length")


async def test_client_request_id_rules(demo: httpx.AsyncClient) -> None:
    ok = await demo.post(CHAT, json={"model": "demo", "messages": HELLO},
                         headers={"x-client-request-id": "trace-1 ok"})
    assert ok.status_code == 200 and ok.headers["x-client-request-id"] == "trace-1 ok"
    for bad in ("x" * 513, "caf\u00e9".encode(), b"tab\there"):
        response = await demo.post(CHAT, json={"model": "demo", "messages": HELLO},
                                   headers={"x-client-request-id": bad})
        assert_error(response, 400, "invalid_client_request_id", "X-Client-Request-Id")


async def test_browsers_get_an_html_error_page(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/v1/nothing", headers={
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    rid = response.headers["x-request-id"]
    assert rid in response.text and "What to do" in response.text
    assert "<script" not in response.text


async def test_html_page_escapes_what_the_client_sent(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/v1/<script>alert(1)</script>", headers={"accept": "text/html"})
    assert "<script>alert" not in response.text and "&lt;script&gt;" in response.text


async def test_demo_failure_rate_is_an_upstream_error(gateway_client) -> None:  # type: ignore[no-untyped-def]
    c = await gateway_client(demo={"failure_rate": 1.0})
    response = await c.post(CHAT, json={"model": "demo", "messages": HELLO})
    assert_error(response, 500, "upstream_error")
