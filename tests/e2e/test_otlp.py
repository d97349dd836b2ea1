"""OTLP export from a real gateway process to an OTLP/HTTP receiver the test starts: one span
per request with the GenAI and HTTP attributes and the request id, the backend call as its
child whose traceparent reached the test upstream, a caller's traceparent honoured, the GenAI
metrics; and a collector that is down costs requests nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import upstream_cfg
from tests.support.otlp import Receiver, Span
from tests.support.procs import Gateway, Upstream, free_port

HELLO = [{"role": "user", "content": "hello"}]
SERVER, CLIENT = 2, 3  # SpanKind in OTLP
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def config(up: Upstream, endpoint: str, **telemetry: Any) -> dict[str, Any]:
    return {"upstreams": {"a": upstream_cfg(up)},
            "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]}},
            "telemetry": {"otlp_endpoint": endpoint, "otlp_metrics_interval": 0.5,
                          "otlp_service_name": "gh-test",
                          "otlp_headers": {"authorization": "Bearer otlp-secret-123"},
                          **telemetry}}


def spans_of(r: Receiver, request_id: str) -> list[Span]:
    return [s for s in r.spans if s.attributes.get("gatehouse.request_id") == request_id]


def test_spans_linkage_and_metrics_with_two_workers(receiver: Receiver, up_a: Upstream,
                                   start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(config(up_a, receiver.url), workers=2, start_timeout=60)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=HELLO)
    rid = raw.headers["x-request-id"]
    sent = up_a.stats()["last_headers"]["traceparent"]
    pair = receiver.wait_for(lambda r: len(spans_of(r, rid)) == 2 and spans_of(r, rid))
    server = next(s for s in pair if s.kind == SERVER)
    call = next(s for s in pair if s.kind == CLIENT)
    assert server.name == "chat m" and call.name == "chat test-model"
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "m" and a["gen_ai.response.model"] == "test-model"
    assert a["http.request.method"] == "POST" and a["http.response.status_code"] == 200
    assert a["url.path"] == "/v1/chat/completions" and a["gatehouse.outcome"] == "ok"
    usage = raw.parse().usage
    assert usage is not None and a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert "error.type" not in a and server.resource["service.name"] == "gh-test"
    # the backend call: a child of the request's span, whose context the upstream received
    assert call.trace_id == server.trace_id and call.parent_id == server.span_id
    assert sent == f"00-{call.trace_id}-{call.span_id}-01"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["http.response.status_code"] == 200
    # the collector got the configured headers (the secret is never in the gateway's log)
    assert any(h.get("authorization") == "Bearer otlp-secret-123" for h in receiver.headers), \
        receiver.headers[:1]
    assert "otlp-secret-123" not in gw.log.read_text()

    # a caller's traceparent makes the request's span its child
    with httpx.Client(timeout=30) as c:
        r = c.post(gw.url + "/v1/chat/completions", json={"model": "m", "messages": HELLO},
                   headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    child = receiver.wait_for(lambda rc: [s for s in spans_of(rc, r.headers["x-request-id"])
                                          if s.kind == SERVER])[0]
    assert child.trace_id == CALLER_TRACE and child.parent_id == CALLER_SPAN
    assert up_a.stats()["last_headers"]["traceparent"].startswith(f"00-{CALLER_TRACE}-")

    # an error: error.type is the gateway's code, status ERROR for a 5xx
    up_a.control(status=503)
    with httpx.Client(timeout=30) as c:
        failed = c.post(gw.url + "/v1/chat/completions", json={"model": "m", "messages": HELLO})
    assert failed.status_code == 503
    bad = receiver.wait_for(lambda rc: [s for s in spans_of(rc, failed.headers["x-request-id"])
                                        if s.kind == SERVER])[0]
    assert bad.attributes["error.type"] == "upstream_unavailable" and bad.status_code == 2
    assert bad.attributes["gatehouse.attempts"] == ["a:503"]

    # the GenAI metrics, with the conventions' names and boundaries
    durations = receiver.wait_for(lambda rc: [
        m for m in rc.metrics if m[0] == "gen_ai.server.request.duration"
        and m[1].get("gen_ai.request.model") == "m" and not m[1].get("error.type")])
    assert durations[-1][2][:3] == [0.01, 0.02, 0.04] and durations[-1][3] >= 1
    assert receiver.wait_for(lambda rc: {m[0] for m in rc.metrics} >= {
        "gen_ai.client.token.usage", "gen_ai.client.operation.duration"})
    # the same requests in Prometheus' multiprocess mode: /metrics sums the two workers
    assert gw.metric("gen_ai_server_request_duration_seconds_count",
                     gen_ai_request_model="m") == 3
    assert gw.metric("gen_ai_server_request_duration_seconds_count",
                     error_type="upstream_unavailable") == 1
    assert gw.metric("gen_ai_client_operation_duration_seconds_count", error_type="503") == 1


def test_collector_down_costs_requests_nothing(up_a: Upstream,
                                               start_gateway: Callable[..., Gateway]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw = start_gateway(config(up_a, closed), start_timeout=60)
    began = time.monotonic()
    with httpx.Client(timeout=30) as c:
        for i in range(20):
            r = c.post(gw.url + "/v1/chat/completions",
                       json={"model": "m", "messages": HELLO, "stream": i % 2 == 0})
            assert r.status_code == 200
    dropped = 0.0
    deadline = time.monotonic() + 30
    while dropped < 20 and time.monotonic() < deadline:
        dropped = gw.metric("gatehouse_otlp_dropped_total", reason="export_failed")
        time.sleep(0.2)
    assert dropped >= 20, "every span the collector did not take is counted"
    log = gw.log.read_text()
    warnings = [line for line in log.splitlines() if "OTLP" in line]
    minutes = (time.monotonic() - began) / 60
    assert 1 <= len(warnings) <= 1 + minutes, warnings  # one a minute, not one per batch
    assert "otlp-secret-123" not in log and "Traceback" not in log
