"""The upstream stage with scripted in-process backends: failover rules, verdicts, streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gatehouse.config import UpstreamSettings
from gatehouse.context import Outcome, RequestContext, Usage
from gatehouse.errors import GatehouseError
from gatehouse.pipeline import Pipeline, StreamBroken
from gatehouse.telemetry.metrics import Metrics
from gatehouse.upstream.backend import UpstreamCall
from gatehouse.upstream.breaker import BreakerPolicy, CircuitBreaker
from gatehouse.upstream.failures import Broken, ConnectFailed, TimedOut
from gatehouse.upstream.router import ModelRoute, Router, Target
from gatehouse.upstream.stage import UpstreamStage, caller_of

DEFAULTS = BreakerPolicy.of(UpstreamSettings(base_url="http://127.0.0.1:9/v1"))
OK_BODY = b'{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}'


class Scripted:
    """Answers with ``status`` and ``body`` / ``events``, or raises ``error``."""

    def __init__(self, name: str, status: int = 200, body: bytes = OK_BODY,
                 events: list[bytes] | None = None, error: Exception | None = None,
                 then: Exception | None = None, hang: bool = False,
                 retry_after: str | None = None, poison: bytes | None = None) -> None:
        self.name, self.first_byte_timeout = name, 5.0
        self.status, self.body, self.events, self.error, self.then = status, body, events, error, then
        self.hang, self.retry_after_value = hang, retry_after
        self.poison = poison  # a request containing it is answered 500, the others as usual
        self.calls: list[UpstreamCall] = []
        self.closed = 0

    async def open(self, call: UpstreamCall) -> Any:
        self.calls.append(call)
        if self.hang:
            await asyncio.sleep(30)
        if self.error is not None:
            raise self.error
        backend = self
        poisoned = self.poison is not None and self.poison in call.body

        class Reply:
            status = 500 if poisoned else backend.status
            content_type = "application/json"
            retry_after = backend.retry_after_value
            request_id = "up-123"

            async def read(self) -> bytes:
                return backend.body

            async def chunks(self) -> AsyncIterator[bytes]:
                for event in backend.events or []:
                    yield event
                if backend.then is not None:
                    raise backend.then

            def close(self) -> None:
                backend.closed += 1

            def finish(self) -> None:
                backend.closed += 1

        return Reply()

    async def probe(self) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def stage_for(*backends: Scripted, failures: int = 5, policy: BreakerPolicy | None = None
              ) -> tuple[UpstreamStage, list[CircuitBreaker]]:
    """``failures`` opens a circuit as the classic breaker did (one caller is enough)."""
    policy = policy or BreakerPolicy(consecutive_failures=failures, window=60,
                                     min_requests=failures, failure_ratio=0.5, min_callers=1,
                                     cooldown=60)
    breakers = [CircuitBreaker(policy) for _ in backends]
    # tried in the given order, always: the router's key for weight w is r ** (1/w), which is
    # 1.0 for w = 1e300, r itself for w = 1 and 0.0 for w = 1e-300 (10 ** 9, 10 ** 6 … let
    # the second backend come first once in a thousand draws, and CI met it)
    assert len(backends) <= 3
    targets = [Target(b, br, "up-model", (1e300, 1.0, 1e-300)[i])
               for i, (b, br) in enumerate(zip(backends, breakers, strict=True))]
    router = Router({"m": ModelRoute("m", targets, "x", 0)})
    return UpstreamStage(router, Metrics()), breakers


def ctx(stream: bool = False, include_usage: bool = False) -> RequestContext:
    c = RequestContext("req_test", "POST", "/v1/chat/completions", {}, None)
    c.endpoint, c.model, c.stream, c.include_usage = "chat.completions", "m", stream, include_usage
    c.body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    return c


@pytest.mark.parametrize("status", [401, 403, 408, 429, 500, 501, 502, 503, 504, 507, 529])
async def test_fails_over_on_backend_statuses(status: int) -> None:
    a, b = Scripted("a", status=status), Scripted("b")
    stage, breakers = stage_for(a, b)
    c = ctx()
    await stage.enter(c)
    assert c.backend == "b" and c.attempts == [f"a:{status}", "b"]
    assert breakers[0].counts() == (0, 1) and breakers[1].counts() == (1, 0)
    assert a.closed == 1


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_request_errors_pass_through_without_failover(status: int) -> None:
    a, b = Scripted("a", status=status, body=b'{"error":{"message":"bad"}}'), Scripted("b")
    stage, breakers = stage_for(a, b)
    c = ctx()
    await stage.enter(c)
    assert c.reply is not None and c.reply.status == status and not b.calls
    assert breakers[0].state == "closed" and breakers[0].counts() == (0, 0)


async def test_backend_sees_its_own_model_name_and_injected_usage() -> None:
    a = Scripted("a", events=[b'data: {"choices":[{"delta":{}}]}\n\n', b"data: [DONE]\n\n"])
    stage, _ = stage_for(a)
    c = ctx(stream=True)
    await stage.enter(c)
    assert c.reply is not None and c.reply.stream is not None
    sent = a.calls[0]
    assert b'"model":"up-model"' in sent.body and b'"include_usage":true' in sent.body


@pytest.mark.parametrize("failures, status, code", [
    ([ConnectFailed("refused"), ConnectFailed("refused")], 503, "upstream_unavailable"),
    ([TimedOut("slow"), TimedOut("slow")], 504, "upstream_timeout"),
    ([TimedOut("slow"), ConnectFailed("refused")], 503, "upstream_unavailable"),
    ([500, ConnectFailed("refused")], 500, "upstream_error"),
    ([503, 503], 503, "upstream_unavailable"),
    ([504, TimedOut("slow")], 504, "upstream_timeout"),
    ([429, 401], 503, "upstream_unavailable"),
    ([Broken("reset"), 502], 500, "upstream_error"),
])
async def test_giving_up_names_the_right_failure(failures: list[Any], status: int,
                                                 code: str) -> None:
    backends = [Scripted(f"b{i}", error=f) if isinstance(f, Exception) else
                Scripted(f"b{i}", status=f) for i, f in enumerate(failures)]
    stage, _ = stage_for(*backends)
    with pytest.raises(GatehouseError) as info:
        await stage.enter(ctx())
    assert (info.value.status, info.value.code) == (status, code)
    assert "b0" in (info.value.cause or "") and "b1" in (info.value.cause or "")


async def test_upstream_retry_after_is_passed_on() -> None:
    stage, _ = stage_for(Scripted("a", status=429, retry_after="7"))
    with pytest.raises(GatehouseError) as info:
        await stage.enter(ctx())
    assert info.value.response_headers()["retry-after"] == "7"


async def test_open_circuits_are_skipped_and_reported() -> None:
    a, b = Scripted("a", status=500), Scripted("b", status=500)
    stage, breakers = stage_for(a, b, failures=1)
    with pytest.raises(GatehouseError):
        await stage.enter(ctx())
    with pytest.raises(GatehouseError) as info:
        await stage.enter(c := ctx())
    assert c.attempts == ["a:circuit_open", "b:circuit_open"] and len(a.calls) == 1
    assert info.value.code == "upstream_unavailable"
    assert 59 <= float(info.value.response_headers()["retry-after"]) <= 60


async def test_cancelled_attempt_frees_the_half_open_probe() -> None:
    a = Scripted("a", hang=True)
    stage, breakers = stage_for(a, failures=1)
    breakers[0].failure("anonymous")
    breakers[0].opened_at -= 61  # cooldown over: the next call is the probe
    task = asyncio.ensure_future(stage.enter(ctx()))
    await asyncio.sleep(0.01)
    assert breakers[0].probe_started is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breakers[0].probe_started is None, "the probe slot is free for the next request"


@pytest.mark.parametrize("events, then, complete", [
    ([b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n', b"data: [DONE]\n\n"], None, True),
    ([b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'], None, True),
    ([b'data: {"choices":[{"delta":{"content":"say [DONE] now"}}]}\n\n'], None, False),
    ([b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'], Broken("reset"), False),
    ([b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'], RuntimeError("surprise"), False),
])
async def test_stream_end_is_judged_and_breaks_are_told_to_the_client(
        events: list[bytes], then: Exception | None, complete: bool) -> None:
    a = Scripted("a", events=events, then=then)
    stage, breakers = stage_for(a)
    c = ctx(stream=True)
    await stage.enter(c)
    assert c.reply is not None and c.reply.stream is not None
    out = b""
    broken = None
    relay = c.reply.stream.__aiter__()
    try:
        async for chunk in relay:
            out += chunk
    except StreamBroken as exc:
        broken = exc
    assert (broken is None) is complete
    if complete:
        assert b'"error"' not in out and breakers[0].counts() == (1, 0)
    else:
        assert out.endswith(b"\n\n") and b'data: {"error":' in out
        assert b'"code":"upstream_error"' in out and breakers[0].counts() == (1, 1)
    await stage.exit(c, Outcome("ok", 200))
    assert a.closed >= 1


async def test_usage_chunk_split_and_dropped_for_clients_that_did_not_ask() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}}\n\n'
    a = Scripted("a", events=[b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
                              usage[:20], usage[20:], b"data: [DONE]\n\n"])
    stage, _ = stage_for(a)
    c = ctx(stream=True)
    await stage.enter(c)
    out = b"".join([chunk async for chunk in c.reply.stream])  # type: ignore[union-attr]
    assert b"usage" not in out and out.endswith(b"data: [DONE]\n\n")
    assert c.usage is not None and c.usage.total_tokens == 13


async def test_stream_closed_before_it_started_still_releases_the_backend() -> None:
    a = Scripted("a", events=[b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"])
    stage, _ = stage_for(a)
    c = ctx(stream=True)
    reply = await Pipeline([stage]).handle(c)
    assert reply.stream is not None
    await reply.stream.aclose()  # never iterated: the client left before the first write
    assert a.closed >= 1


async def test_a_full_backend_is_skipped_and_all_full_is_at_capacity() -> None:
    from gatehouse.context import Outcome
    from gatehouse.errors import AtCapacity
    from gatehouse.upstream.slots import BackendSlots

    a, b = Scripted("a"), Scripted("b")
    stage, _ = stage_for(a, b)
    targets = stage.router.routes["m"].targets
    targets[0].slots, targets[1].slots = BackendSlots(1), BackendSlots(1)
    first = ctx()
    await stage.enter(first)  # takes a's only slot, held until its answer ends
    assert first.backend == "a" and targets[0].slots.inflight == 1
    second = ctx()
    await stage.enter(second)
    assert second.backend == "b" and second.attempts == ["a:at_capacity", "b"]
    with pytest.raises(AtCapacity) as full:
        await stage.enter(ctx())
    assert full.value.status == 503 and full.value.code == "at_capacity"
    await stage.exit(first, Outcome("ok", 200))
    await stage.exit(second, Outcome("ok", 200))
    assert targets[0].slots.inflight == 0 and targets[1].slots.inflight == 0


async def test_backend_slots_come_back_on_failures_and_cancellation() -> None:
    from gatehouse.upstream.slots import BackendSlots

    a, b = Scripted("a", status=503), Scripted("b", error=ConnectFailed("refused"))
    stage, _ = stage_for(a, b)
    targets = stage.router.routes["m"].targets
    targets[0].slots, targets[1].slots = BackendSlots(1), BackendSlots(1)
    with pytest.raises(Exception):
        await stage.enter(ctx())
    assert targets[0].slots.inflight == 0 and targets[1].slots.inflight == 0
    hung = Scripted("h", hang=True)
    stage, _ = stage_for(hung)
    target = stage.router.routes["m"].targets[0]
    target.slots = BackendSlots(1)
    task = asyncio.create_task(stage.enter(ctx()))
    await asyncio.sleep(0.01)
    assert target.slots.inflight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert target.slots.inflight == 0


# -- circuit breakers count per caller ----------------------------------------------------------

def as_caller(c: RequestContext, who: str) -> RequestContext:
    from gatehouse.identity.principal import Principal

    c.principal = Principal(kind="key", tier="free", key_id=who)
    return c


def test_callers_are_keys_users_or_client_addresses() -> None:
    import ipaddress

    from gatehouse.identity.principal import Principal

    assert caller_of(as_caller(ctx(), "key_1")) == "key:key_1"
    c = ctx()
    c.principal = Principal(kind="session", tier="web", user_id="user_9")
    assert caller_of(c) == "user:user_9"
    c.principal = Principal(kind="anonymous", tier="free")
    c.client_ip = ipaddress.ip_address("203.0.113.7")
    assert caller_of(c) == "ip4:cb007107"  # 203.0.113.7
    c.client_ip = ipaddress.ip_address("2001:db8:1:2:3:4:5:6")
    same_64 = ipaddress.ip_address("2001:db8:1:2:ffff::1")
    assert caller_of(c) == "ip6:20010db800010002/64", "one client holds a whole /64"
    c.client_ip = same_64
    assert caller_of(c) == "ip6:20010db800010002/64"
    c.client_ip = ipaddress.ip_address("2001:db8:1:3::1")
    assert caller_of(c) != "ip6:20010db800010002/64"
    assert caller_of(ctx()) == "anonymous"


def poisoned(c: RequestContext) -> RequestContext:
    assert c.body is not None
    c.body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x"}}
    return c


async def test_one_keys_poison_requests_do_not_open_the_circuit_for_another_key() -> None:
    """The reproduction of issue 12: llama.cpp answers json_schema requests with 500."""
    a = Scripted("a", poison=b"json_schema")
    stage, breakers = stage_for(a, policy=DEFAULTS)  # the defaults
    for _ in range(30):
        with pytest.raises(GatehouseError) as info:
            await stage.enter(poisoned(as_caller(ctx(), "key_poison")))
        assert info.value.status == 500 and info.value.code == "upstream_error"
        good = as_caller(ctx(), "key_good")
        await stage.enter(good)
        assert good.backend == "a" and good.reply is not None and good.reply.status == 200
    assert breakers[0].state == "closed"


async def test_a_lone_failing_caller_is_held_back_and_told_why() -> None:
    a = Scripted("a", poison=b"json_schema")
    stage, breakers = stage_for(a, policy=DEFAULTS)
    for _ in range(5):
        with pytest.raises(GatehouseError):
            await stage.enter(poisoned(as_caller(ctx(), "key_poison")))
    with pytest.raises(GatehouseError) as info:
        await stage.enter(c := as_caller(ctx(), "key_poison"))
    assert info.value.code == "upstream_unavailable" and c.attempts == ["a:caller_isolated"]
    assert "Your last requests" in info.value.message
    assert 29 <= float(info.value.response_headers()["retry-after"]) <= 30
    assert len(a.calls) == 5
    await stage.enter(other := as_caller(ctx(), "key_other"))
    assert other.backend == "a" and breakers[0].state == "closed"


async def test_connect_failures_open_the_circuit_for_every_caller() -> None:
    a = Scripted("a", error=ConnectFailed("refused"))
    stage, breakers = stage_for(a, policy=DEFAULTS)
    for _ in range(5):
        with pytest.raises(GatehouseError):
            await stage.enter(as_caller(ctx(), "key_one"))
    assert breakers[0].state == "open"
    with pytest.raises(GatehouseError) as info:
        await stage.enter(c := as_caller(ctx(), "key_two"))
    assert info.value.code == "upstream_unavailable" and c.attempts == ["a:circuit_open"]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_request_errors_count_for_nothing(status: int) -> None:
    a = Scripted("a", status=status, body=b'{"error":{"message":"bad"}}')
    stage, breakers = stage_for(a, policy=DEFAULTS)
    for _ in range(20):
        await stage.enter(as_caller(ctx(), "key_one"))
    assert breakers[0].state == "closed" and breakers[0].counts() == (0, 0)
    assert breakers[0].allow("key_one")


@pytest.mark.parametrize(("reported", "expected"), [
    ({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, (5, 7, 12)),
    ({"prompt_tokens": 5, "completion_tokens": 7}, (5, 7, 12)),
    # a total below its parts charged less than was used: 0 tokens for 10,000
    ({"prompt_tokens": 5000, "completion_tokens": 5000, "total_tokens": 0}, (5000, 5000, 10000)),
    ({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, (3, 4, 7)),
    # not counts: the gateway counts the prompt itself (None here)
    ({"prompt_tokens": -5, "completion_tokens": 7}, None),
    ({"prompt_tokens": 5, "completion_tokens": -1}, None),
    ({"prompt_tokens": True, "completion_tokens": 7}, None),
    ({"prompt_tokens": 5.5, "completion_tokens": 7}, None),
    ({"prompt_tokens": 10 ** 12, "completion_tokens": 7}, None),
    ({"completion_tokens": 7}, None),
    ([1, 2], None),
])
def test_a_backends_usage_is_believed_only_as_counts(reported: Any,
                                                      expected: tuple[int, ...] | None) -> None:
    """A negative count once reached a Prometheus counter in the telemetry exit, which
    raised: the request's record was lost (no access-log line, 404 in /v1/requests)."""
    usage = Usage.from_openai(reported)
    got = None if usage is None else (usage.prompt_tokens, usage.completion_tokens,
                                       usage.total_tokens)
    assert got == expected


async def test_an_endless_event_breaks_the_stream_or_fails_over() -> None:
    """A backend whose event never ends: before its first event, the next backend answers;
    after its first event, the client is told the stream broke (not held while the backend
    fills the worker's memory)."""
    from gatehouse.upstream.sse import MAX_EVENT

    endless = [b"data: " + b"x" * 65536] * (MAX_EVENT // 65536 + 2)
    first = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    good = Scripted("b", events=[first, b"data: [DONE]\n\n"])
    stage, _ = stage_for(Scripted("a", events=endless), good)
    c = ctx(stream=True)
    await stage.enter(c)
    out = b"".join([chunk async for chunk in c.reply.stream])  # type: ignore[union-attr]
    assert out == first + b"data: [DONE]\n\n"
    assert c.attempts == ["a:Broken", "b"]
    await stage.exit(c, Outcome("ok", 200))

    stage, _ = stage_for(Scripted("a", events=[first, *endless]))
    c = ctx(stream=True)
    await stage.enter(c)
    got = b""
    with pytest.raises(StreamBroken, match="broke off mid-stream"):
        async for chunk in c.reply.stream:  # type: ignore[union-attr]
            got += chunk
    assert got.startswith(first) and b'"code":"upstream_error"' in got
    await stage.exit(c, Outcome("ok", 200))


@pytest.mark.parametrize("after_blank, ok", [
    (b'{"id": "x", "choices": []}', False),            # JSON to a stream request
    (b"<html><body>busy</body></html>", False),         # a proxy's page
    (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n', True),
])
async def test_a_stream_is_judged_by_its_first_bytes_after_blank_space(after_blank: bytes,
                                                                       ok: bool) -> None:
    """Blank space in many pieces before the first bytes (looked at a piece at a time, not
    gathered): what follows still decides — JSON or HTML is no event stream (failed over,
    here 500), events pass."""
    blanks = [b"  ", b"\n", b" \t ", b"\r\n"] * 50
    a = Scripted("a", events=[*blanks, after_blank])
    stage, _ = stage_for(a)
    c = ctx(stream=True)
    if ok:
        await stage.enter(c)
        out = b"".join([chunk async for chunk in c.reply.stream])  # type: ignore[union-attr]
        assert out.endswith(b"data: [DONE]\n\n")
    else:
        with pytest.raises(GatehouseError) as info:
            await stage.enter(c)
        assert info.value.code == "upstream_error" and c.attempts == ["a:Malformed"]
    await stage.exit(c, Outcome("ok", 200))
