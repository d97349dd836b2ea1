from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import httpx

from gatehouse.app import create_app
from tests.unit.conftest import make_settings

HELLO = [{"role": "user", "content": "hello world"}]


async def test_models_health_ready_and_metrics(demo: httpx.AsyncClient) -> None:
    models = (await demo.get("/v1/models")).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["demo"]
    assert (await demo.get("/v1/models/demo")).json()["owned_by"] == "gatehouse-demo"
    assert (await demo.get("/v1/models/zzz")).json()["error"]["code"] == "model_not_found"
    health = await demo.get("/healthz")
    assert health.json() == {"status": "ok"} and health.headers["x-request-id"].startswith("req_")
    ready = await demo.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["demo"]["ready"]
    await demo.post("/v1/chat/completions", json={"model": "demo", "messages": HELLO})
    metrics = (await demo.get("/metrics")).text
    assert 'gatehouse_requests_total{endpoint="chat.completions",model="demo",outcome="ok",' \
           'status="200"} 1.0' in metrics
    assert 'gatehouse_tokens_total{kind="completion",model="demo"} 24.0' in metrics


async def test_readyz_degraded_then_not_ready(gateway_client) -> None:  # type: ignore[no-untyped-def]
    gone = {"upstreams": {"gone": {"base_url": "http://127.0.0.1:9/v1", "connect_timeout": 0.5}},
            "models": {"m": {"backends": ["gone"]}}}
    ready = await (await gateway_client(**gone)).get("/readyz")
    body = ready.json()
    assert ready.status_code == 200 and body["status"] == "degraded"
    assert not body["models"]["m"]["ready"] and body["models"]["demo"]["ready"]
    assert body["backends"]["gone"] == {"reachable": False}
    assert "127.0.0.1" not in ready.text, "backend addresses stay out of the public answer"
    alone = await (await gateway_client(demo={"enabled": False}, **gone)).get("/readyz")
    assert alone.status_code == 503 and alone.json()["status"] == "not_ready"


async def test_probes_check_client_id_and_method(demo: httpx.AsyncClient) -> None:
    ok = await demo.get("/healthz", headers={"x-client-request-id": "lb-7"})
    assert ok.headers["x-client-request-id"] == "lb-7"
    bad = await demo.get("/healthz", headers={"x-client-request-id": "x" * 600})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_client_request_id"
    post = await demo.post("/readyz")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    for path in ("/healthz", "/readyz", "/metrics"):  # uptime monitors send HEAD
        get, head = await demo.get(path), await demo.head(path)
        assert head.status_code == get.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["x-request-id"].startswith("req_")
    head = await demo.head("/healthz")
    assert head.headers["content-length"] == str(len((await demo.get("/healthz")).content))


async def test_unknown_model_lookups_do_not_mint_metric_labels(demo: httpx.AsyncClient) -> None:
    for i in range(5):
        await demo.get(f"/v1/models/random-{i}")
    metrics = (await demo.get("/metrics")).text
    assert "random-" not in metrics


async def test_demo_is_deterministic_and_counts_tokens(demo: httpx.AsyncClient) -> None:
    payload = {"model": "demo", "messages": HELLO, "max_tokens": 5}
    a = (await demo.post("/v1/chat/completions", json=payload)).json()
    b = (await demo.post("/v1/chat/completions", json=payload)).json()
    assert a["choices"] == b["choices"]
    assert a["choices"][0]["message"]["content"] == "This is the gatehouse demo"
    assert a["choices"][0]["finish_reason"] == "length"
    assert a["usage"] == {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
    text = (await demo.post("/v1/completions", json={"model": "demo", "prompt": "x"})).json()
    assert text["object"] == "text_completion" and text["usage"]["completion_tokens"] == 24


async def test_demo_embeddings_float_and_base64_agree(demo: httpx.AsyncClient) -> None:
    floats = (await demo.post("/v1/embeddings", json={
        "model": "demo", "input": ["a", "b"], "dimensions": 16})).json()
    b64 = (await demo.post("/v1/embeddings", json={
        "model": "demo", "input": ["a", "b"], "dimensions": 16,
        "encoding_format": "base64"})).json()
    decoded = struct.unpack("<16f", base64.b64decode(b64["data"][0]["embedding"]))
    assert [round(v, 5) for v in decoded] == [round(v, 5) for v in floats["data"][0]["embedding"]]
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    assert abs(sum(v * v for v in floats["data"][0]["embedding"]) - 1) < 1e-6


async def test_client_leaving_mid_stream_runs_exits_in_process() -> None:
    """Drive the ASGI app by hand: the client disconnects after the first chunk."""
    app = create_app(make_settings(demo={"ms_per_token": 20, "reply_tokens": 50}))
    body = b'{"model":"demo","stream":true,"messages":[{"role":"user","content":"x"}]}'
    sent: list[dict[str, Any]] = []
    first_chunk = asyncio.Event()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_chunk.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"content-type", b"application/json")], "client": ("1.2.3.4", 5)}
    await asyncio.wait_for(app(scope, receive, send), 5)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert 1 <= len(bodies) < 10, "the stream stopped soon after the client left"
    assert app.metrics.inflight._value.get() == 0
    metrics = app.metrics.render().decode()
    assert 'outcome="client_disconnected",status="499"} 1.0' in metrics


async def test_token_series_appear_only_for_metered_usage(demo: httpx.AsyncClient) -> None:
    """``gatehouse_tokens_total`` says the tokens metered from upstream usage: a request that
    metered none (a model list, a 404, an unknown model) adds no series, not even at 0 — no
    model="" and no model that has not answered."""
    await demo.get("/v1/models")
    await demo.get("/nope")
    await demo.post("/v1/chat/completions", json={"model": "zzz", "messages": HELLO})
    metrics = (await demo.get("/metrics")).text
    assert "gatehouse_requests_total{" in metrics
    assert [line for line in metrics.splitlines()
            if line.startswith("gatehouse_tokens_total{")] == []
