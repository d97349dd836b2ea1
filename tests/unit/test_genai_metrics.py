"""Prometheus metrics named after OpenTelemetry's GenAI conventions: names, labels, the
conventions' bucket boundaries, error.type, and bounded cardinality."""

from __future__ import annotations

import random
import string
from collections.abc import Callable

import httpx

from gatehouse.telemetry.genai import (
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
)

HELLO = [{"role": "user", "content": "hello world"}]
DEMO = ('gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
        'gen_ai_request_model="demo",gen_ai_response_model="demo"')


def samples(text: str, prefix: str = "gen_ai_") -> dict[str, float]:
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith(prefix) and not line.startswith("#")}


def buckets(text: str, name: str) -> list[float]:
    found = []
    for series in samples(text, name + "_bucket{"):
        le = series.split('le="', 1)[1].split('"', 1)[0]
        if le != "+Inf" and float(le) not in found:
            found.append(float(le))
    return sorted(found)


async def test_names_labels_and_the_conventions_buckets(demo: httpx.AsyncClient) -> None:
    plain = await demo.post("/v1/chat/completions", json={"model": "demo", "messages": HELLO})
    assert plain.status_code == 200
    async with demo.stream("POST", "/v1/chat/completions",
                           json={"model": "demo", "messages": HELLO, "stream": True}) as s:
        assert s.status_code == 200
        async for _ in s.aiter_bytes():
            pass
    await demo.post("/v1/embeddings", json={"model": "demo", "input": "hi"})
    text = (await demo.get("/metrics")).text
    got = samples(text)
    assert got[f'gen_ai_server_request_duration_seconds_count{{error_type="",{DEMO}}}'] == 2
    # time to first token and per output token: the successful stream only
    assert got[f"gen_ai_server_time_to_first_token_seconds_count{{{DEMO}}}"] == 1
    assert got[f"gen_ai_server_time_per_output_token_seconds_count{{{DEMO}}}"] == 1
    usage = plain.json()["usage"]
    assert got[f'gen_ai_client_token_usage_count{{{DEMO},gen_ai_token_type="input"}}'] == 2
    assert got[f'gen_ai_client_token_usage_sum{{{DEMO},gen_ai_token_type="output"}}'] == \
        2 * usage["completion_tokens"]
    assert got[f'gen_ai_client_operation_duration_seconds_count{{error_type="",{DEMO}}}'] == 2
    emb = DEMO.replace('"chat"', '"embeddings"')
    assert got[f'gen_ai_server_request_duration_seconds_count{{error_type="",{emb}}}'] == 1
    assert buckets(text, "gen_ai_server_request_duration_seconds") == list(DURATION_BUCKETS)
    assert buckets(text, "gen_ai_client_operation_duration_seconds") == list(DURATION_BUCKETS)
    assert buckets(text, "gen_ai_server_time_to_first_token_seconds") == list(TTFT_BUCKETS)
    assert buckets(text, "gen_ai_server_time_per_output_token_seconds") == list(TPOT_BUCKETS)
    assert buckets(text, "gen_ai_client_token_usage") == [float(b) for b in TOKEN_BUCKETS]
    # the gateway's own metrics stay beside them
    assert 'gatehouse_requests_total{endpoint="chat.completions",model="demo"' in text


async def test_error_type_is_the_gateways_error_code(
        gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    c = await gateway_client(
        upstreams={"gone": {"base_url": "http://127.0.0.1:9/v1", "connect_timeout": 0.5}},
        models={"m": {"backends": [{"upstream": "gone", "model": "back-m"}]}})
    assert (await c.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
            ).status_code == 503
    assert (await c.post("/v1/chat/completions", json={"model": "demo"})).status_code == 400
    got = samples((await c.get("/metrics")).text)
    m = DEMO.replace('"demo"', '"m"', 1).replace('"demo"', '"back-m"')
    failed = m.replace('gen_ai_response_model="back-m"', 'gen_ai_response_model=""')
    assert got['gen_ai_server_request_duration_seconds_count{error_type="upstream_unavailable",'
               + failed + "}"] == 1
    # the call to the backend, as the gateway's client metric: the failure's class
    assert got['gen_ai_client_operation_duration_seconds_count{error_type="ConnectFailed",'
               + m + "}"] == 1
    bad = [k for k in got if k.startswith("gen_ai_server_request_duration_seconds_count")
           and 'gen_ai_request_model=""' in k and 'error_type="invalid_request_error"' not in k
           and "upstream" not in k]
    assert bad and all('error_type="' in k and 'error_type=""' not in k for k in bad)
    # a failed request mints no TTFT, TPOT or token series
    assert not [k for k in got if "time_to_first_token" in k or "token_usage" in k]


async def test_a_thousand_unknown_models_create_no_series(demo: httpx.AsyncClient) -> None:
    rng = random.Random(13)
    first = await demo.post("/v1/chat/completions", json={"model": "zz-first", "messages": HELLO})
    assert first.json()["error"]["code"] == "model_not_found"
    before = samples((await demo.get("/metrics")).text, "")
    names = ["".join(rng.choices(string.ascii_letters + string.digits, k=24))
             for _ in range(1000)]
    for name in names:
        r = await demo.post("/v1/chat/completions", json={"model": name, "messages": HELLO})
        assert r.status_code == 404
    text = (await demo.get("/metrics")).text
    after = samples(text, "")
    assert after.keys() == before.keys(), "the series are the same set as after one"
    assert not any(name in text for name in names)
    assert after['gen_ai_server_request_duration_seconds_count{error_type="model_not_found",'
                 'gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
                 'gen_ai_request_model="",gen_ai_response_model=""}'] == 1001
