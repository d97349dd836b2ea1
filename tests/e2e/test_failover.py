"""Failover, circuit breaking, timeouts and disconnects against real processes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import upstream_cfg
from tests.e2e.test_identity import cli
from tests.support.procs import Gateway, Upstream

HELLO = [{"role": "user", "content": "hello"}]


def sdk(gw: Gateway) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)


# ports bound and never listened on, held for the session: connecting is refused, and no
# other test's process can take the port (a port merely free when the config was written was
# taken by a parallel test's upstream, which then answered as the "dead" backend)
_DEAD: list[socket.socket] = []


def dead_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _DEAD.append(sock)
    return int(sock.getsockname()[1])


def two_backends(up_a: Upstream, up_b: Upstream | None = None, *, dead_first: bool = False,
                 **upstream: Any) -> dict[str, Any]:
    """Model ``m`` on backend a (tried first: overwhelming weight), then b."""
    first = {"base_url": f"http://127.0.0.1:{dead_port()}/v1", **upstream} if dead_first \
        else upstream_cfg(up_a, **upstream)
    ups = {"a": first}
    backends: list[dict[str, Any]] = [{"upstream": "a", "model": "test-model", "weight": 1e9}]
    if up_b is not None:
        ups["b"] = upstream_cfg(up_b, **upstream)
        backends.append({"upstream": "b", "model": "test-model", "weight": 1e-9})
    return {"upstreams": ups, "models": {"m": {"backends": backends}}}


def test_failover_when_first_backend_is_dead(start_gateway: Callable[..., Gateway],
                                             up_a: Upstream, up_b: Upstream) -> None:
    gw = start_gateway(two_backends(up_a, up_b, dead_first=True))
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
    assert raw.parse().choices[0].message.content.startswith("b ")  # type: ignore[union-attr]
    record = gw.record(raw.headers["x-request-id"])
    assert record["backend"] == "b" and record["attempts"] == ["a:ConnectFailed", "b"]
    stream = sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream).startswith("b ")


def test_failover_on_5xx_then_500_when_all_fail(start_gateway: Callable[..., Gateway],
                                               up_a: Upstream, up_b: Upstream) -> None:
    gw = start_gateway(two_backends(up_a, up_b))
    up_a.control(status=502)
    assert sdk(gw).chat.completions.create(model="m", messages=HELLO).choices[0] \
        .message.content.startswith("b ")  # type: ignore[union-attr]
    up_b.control(status=500)
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw).chat.completions.create(model="m", messages=HELLO)
    assert info.value.status_code == 500 and info.value.code == "upstream_error"
    record = gw.record(info.value.request_id or "")
    assert record["attempts"] == ["a:502", "b:500"] and "answered 502" in record["error_cause"]


def test_an_answer_past_max_response_bytes_fails_over_then_is_500(
        start_gateway: Callable[..., Gateway], up_a: Upstream, up_b: Upstream) -> None:
    """A backend answering more than ``max_response_bytes`` (64 KiB of JSON against a 1 KiB
    bound here) is an answer the gateway does not take: the call fails over to the next
    backend; with none left the client gets 500 upstream_error (retrying would get the same
    answer, so not 503), the record naming the bound — never a worker's memory taken by one
    answer."""
    gw = start_gateway(two_backends(up_a, up_b, max_response_bytes=1024))
    big = '{"id": "x", "object": "chat.completion", "pad": "' + "z" * 65536 + '"}'
    up_a.control(raw_answer={"status": 200, "content_type": "application/json", "body": big})
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
    assert raw.parse().choices[0].message.content.startswith("b ")  # type: ignore[union-attr]
    assert gw.record(raw.headers["x-request-id"])["attempts"] == ["a:TooLarge", "b"]
    up_b.control(raw_answer={"status": 200, "content_type": "application/json", "body": big})
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw).chat.completions.create(model="m", messages=HELLO)
    assert info.value.status_code == 500 and info.value.code == "upstream_error"
    record = gw.record(info.value.request_id or "")
    assert record["attempts"] == ["a:TooLarge", "b:TooLarge"]
    assert "max_response_bytes" in record["error_cause"]


def test_all_backends_unreachable_is_503_with_retry_after(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    gw = start_gateway(two_backends(up_a, dead_first=True))
    response = httpx.post(gw.url + "/v1/chat/completions",
                          json={"model": "m", "messages": HELLO})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert "127.0.0.1" not in response.text, "backend addresses must not leak to clients"


def test_no_failover_after_first_byte(start_gateway: Callable[..., Gateway], up_a: Upstream,
                                      up_b: Upstream) -> None:
    gw = start_gateway(two_backends(up_a, up_b))
    up_a.control(fail_after_chunks=2, ms_per_token=20)
    before_b = up_b.stats()["requests"]
    stream = sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert got == ["a", " w1"], "the client keeps what it was sent"
    assert "broke off" in str(info.value)
    assert up_b.stats()["requests"] == before_b, "a started stream was replayed elsewhere"
    record = gw.record(stream.response.headers["x-request-id"])
    assert record["outcome"] == "upstream_aborted" and record["backend"] == "a"


def test_circuit_opens_then_half_open_probe_closes_it(start_gateway: Callable[..., Gateway],
                                                      up_a: Upstream, up_b: Upstream) -> None:
    # every test request comes from one anonymous caller (127.0.0.1): min_callers = 1 lets
    # one caller open the circuit, as the classic breaker did
    gw = start_gateway(two_backends(up_a, up_b, breaker_min_requests=2, breaker_min_callers=1,
                                    breaker_cooldown=8.0))  # > the 3 calls below, loaded
    up_a.control(status=503)
    for _ in range(2):
        sdk(gw).chat.completions.create(model="m", messages=HELLO)
    assert gw.metric("gatehouse_upstream_circuit_open", backend="a", model="test-model") == 1
    seen = up_a.stats()["requests"]
    for _ in range(3):  # circuit open: a is skipped, b answers
        content = sdk(gw).chat.completions.create(model="m", messages=HELLO) \
            .choices[0].message.content
        assert content and content.startswith("b ")
    assert up_a.stats()["requests"] == seen
    up_a.reset()
    time.sleep(8.2)  # past the cooldown: the next request is the half-open probe
    content = sdk(gw).chat.completions.create(model="m", messages=HELLO).choices[0].message.content
    assert content and content.startswith("a ")
    assert gw.metric("gatehouse_upstream_circuit_open", backend="a", model="test-model") == 0


def test_first_byte_timeout_fails_streams_over_then_504(
        start_gateway: Callable[..., Gateway], up_a: Upstream, up_b: Upstream) -> None:
    # (b's first byte must come within the timeout on a starved machine too)
    gw = start_gateway(two_backends(up_a, up_b, first_byte_timeout=1.5))
    up_a.control(first_byte_ms=4000)
    stream = sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream).startswith("b ")
    up_b.control(first_byte_ms=4000)
    with pytest.raises(openai.APIStatusError) as info:
        sdk(gw).chat.completions.create(model="m", messages=HELLO, stream=True)
    assert info.value.status_code == 504 and info.value.code == "upstream_timeout"
    assert gw.record(info.value.request_id or "")["attempts"] == ["a:TimedOut", "b:TimedOut"]


def test_total_timeout_bounds_whole_answers(start_gateway: Callable[..., Gateway],
                                            up_a: Upstream, up_b: Upstream) -> None:
    """A non-streaming answer arrives only when done, so only the total timeout applies."""
    gw = start_gateway(two_backends(up_a, up_b, first_byte_timeout=0.3, total_timeout=3.0))
    up_a.control(first_byte_ms=1000)  # slower than first_byte, within total: no failover
    content = sdk(gw).chat.completions.create(model="m", messages=HELLO).choices[0].message.content
    assert content and content.startswith("a ")
    up_a.control(first_byte_ms=4000)
    content = sdk(gw).chat.completions.create(model="m", messages=HELLO).choices[0].message.content
    assert content and content.startswith("b ")


def test_client_disconnect_mid_stream_frees_everything(start_gateway: Callable[..., Gateway],
                                                       up_a: Upstream) -> None:
    gw = start_gateway(two_backends(up_a))
    up_a.control(ms_per_token=50, reply_tokens=200)
    aborted = up_a.stats()["streams_aborted"]
    with httpx.stream("POST", gw.url + "/v1/chat/completions",
                      json={"model": "m", "messages": HELLO, "stream": True}) as response:
        rid = response.headers["x-request-id"]
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert gw.metric("gatehouse_inflight_requests") == 1
    # the client is gone: the gateway must close the upstream stream and run every exit
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and up_a.stats()["streams_aborted"] == aborted:
        time.sleep(0.05)
    assert up_a.stats()["streams_aborted"] == aborted + 1
    while time.monotonic() < deadline and up_a.stats()["active"]:
        time.sleep(0.05)  # (stalled requests of earlier tests may still be sleeping)
    assert up_a.stats()["active"] == 0
    record = gw.record(rid)
    assert record["outcome"] == "client_disconnected" and record["status"] == 499
    assert gw.metric("gatehouse_inflight_requests") == 0


def test_client_disconnect_while_waiting_for_a_slow_answer(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    gw = start_gateway(two_backends(up_a))
    up_a.control(first_byte_ms=2000)
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
                     b"application/json\r\ncontent-length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [r for r in gw.records() if r["path"] == "/v1/chat/completions"]
        if records:
            break
        time.sleep(0.05)
    assert records and records[-1]["outcome"] == "client_disconnected"
    assert gw.metric("gatehouse_inflight_requests") == 0


# -- circuit breakers one caller cannot open (issue 12) ------------------------------------------

JSON_SCHEMA: Any = {"type": "json_schema",
                    "json_schema": {"name": "answer", "schema": {"type": "object"}}}


def keyed_sdk(gw: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def test_one_callers_poison_requests_never_open_the_circuit_for_another(
        start_gateway: Callable[..., Gateway], up_a: Upstream) -> None:
    """The reproduction: a llama.cpp-like backend answers ``response_format: json_schema`` with
    500. Caller A keeps sending such requests; caller B's ordinary ones to the same backend and
    model keep being served by it. The breaker runs with its defaults."""
    gw = start_gateway({
        "identity": {"require_key": True},
        "upstreams": {"a": upstream_cfg(up_a)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]},
                   "m2": {"backends": [{"upstream": "a", "model": "other-model"}]}}})
    cli(gw.config_path, "orgs", "create", "acme")
    cli(gw.config_path, "projects", "create", "acme/app")
    a, b = (keyed_sdk(gw, cli(gw.config_path, "keys", "create", "acme/app").strip())
            for _ in range(2))
    up_a.control(poison="json_schema")
    before = up_a.stats()["requests"]

    def poison(model: str) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as info:
            a.chat.completions.create(model=model, messages=HELLO, response_format=JSON_SCHEMA)
        return info.value

    def served_by_a(client: OpenAI, model: str) -> None:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
        assert (raw.parse().choices[0].message.content or "").startswith("a ")
        assert gw.record(raw.headers["x-request-id"])["attempts"] == ["a"]

    # busy: B is served between A's runs of poison, every one of which reaches the backend
    for _ in range(3):
        served_by_a(b, "m")
        for _ in range(6):
            error = poison("m")
            assert (error.status_code, error.code) == (500, "upstream_error")
    served_by_a(b, "m")
    served_by_a(a, "m")  # A's own ordinary requests are served too
    assert gw.metric("gatehouse_upstream_circuit_open", backend="a", model="test-model") == 0

    # quiet: nobody else uses m2, so after five failures in a row A alone is held back …
    for _ in range(5):
        assert poison("m2").status_code == 500
    held = poison("m2")
    assert (held.status_code, held.code) == (503, "upstream_unavailable")
    assert "Your last requests" in held.message
    assert 1 <= int(held.response.headers["retry-after"]) <= 30
    assert gw.record(held.request_id or "")["attempts"] == ["a:caller_isolated"]
    # … while B is served on m2, and A on m (a breaker per backend and model)
    served_by_a(b, "m2")
    served_by_a(a, "m")
    assert gw.metric("gatehouse_upstream_circuit_open", backend="a", model="other-model") == 0
    assert up_a.stats()["requests"] - before == 3 * 7 + 2 + 5 + 2, \
        "every call but the held-back one reached the backend"


def test_killed_backend_opens_the_circuit_then_fails_over_or_503(
        start_gateway: Callable[..., Gateway], proc_dir: Path, up_b: Upstream) -> None:
    doomed = Upstream("doomed", proc_dir)
    try:
        gw = start_gateway({
            "upstreams": {"d": upstream_cfg(doomed), "b": upstream_cfg(up_b)},
            "models": {"m": {"backends": [{"upstream": "d", "model": "test-model",
                                           "weight": 1e9},
                                          {"upstream": "b", "model": "test-model",
                                           "weight": 1e-9}]},
                       "solo": {"backends": [{"upstream": "d", "model": "test-model"}]}}})
        content = sdk(gw).chat.completions.create(model="m", messages=HELLO) \
            .choices[0].message.content
        assert content and content.startswith("doomed ")
    finally:
        doomed.stop()
    for _ in range(5):  # connection refused, five times in a row: the circuit opens
        raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
        assert (raw.parse().choices[0].message.content or "").startswith("b ")
        assert gw.record(raw.headers["x-request-id"])["attempts"] == ["d:ConnectFailed", "b"]
    assert gw.metric("gatehouse_upstream_circuit_open", backend="d", model="test-model") == 1
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HELLO)
    assert gw.record(raw.headers["x-request-id"])["attempts"] == ["d:circuit_open", "b"]
    # a model with no other backend: 503 at once, Retry-After the rest of the cooldown
    with pytest.raises(openai.APIStatusError) as info:
        sdk(gw).chat.completions.create(model="solo", messages=HELLO)
    assert (info.value.status_code, info.value.code) == (503, "upstream_unavailable")
    assert 2 <= int(info.value.response.headers["retry-after"]) <= 30  # not the default 1
    assert gw.record(info.value.request_id or "")["attempts"] == ["d:circuit_open"]
