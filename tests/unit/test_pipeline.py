"""Exits run in reverse, exactly once, on every path: success, error, stream break, client gone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gatehouse.app import create_app
from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import InvalidRequest, UpstreamFailed
from gatehouse.pipeline import Pipeline, StreamBroken
from tests.unit.conftest import make_settings


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def enter(self, ctx: RequestContext) -> None:
        self.log.append(f"enter {self.name}")

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        self.log.append(f"exit {self.name} {outcome.kind} {outcome.status}")


class Terminal:
    name = "terminal"

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def enter(self, ctx: RequestContext) -> None:
        if self.behaviour == "raise":
            raise InvalidRequest("bad")
        if self.behaviour == "bug":
            raise KeyError("oops")
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        if self.behaviour == "body":
            ctx.reply = Reply(200, {}, b"ok")
            return
        ctx.reply = Reply(200, {}, stream=self.stream())

    async def stream(self) -> AsyncIterator[bytes]:
        yield b"one"
        if self.behaviour == "break":
            raise StreamBroken(UpstreamFailed("broke"))
        await asyncio.sleep(30 if self.behaviour == "slow" else 0)
        yield b"two"

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None


def ctx() -> RequestContext:
    return RequestContext("req_x", "POST", "/v1/x", {}, None)


def pipeline(behaviour: str, log: list[str]) -> Pipeline:
    return Pipeline([Recorder("a", log), Recorder("b", log), Terminal(behaviour)])


async def test_whole_body_runs_exits_in_reverse() -> None:
    log: list[str] = []
    reply = await pipeline("body", log).handle(ctx())
    assert reply.body == b"ok"
    assert log == ["enter a", "enter b", "exit b ok 200", "exit a ok 200"]


@pytest.mark.parametrize("behaviour, status", [("raise", 400), ("bug", 500)])
async def test_errors_are_answered_and_exited(behaviour: str, status: int) -> None:
    log: list[str] = []
    reply = await pipeline(behaviour, log).handle(ctx())
    assert reply.status == status and b'"error"' in reply.body
    assert log[-2:] == [f"exit b error {status}", f"exit a error {status}"]


async def test_refuse_enters_then_answers_the_error() -> None:
    log: list[str] = []
    reply = await Pipeline([Recorder("a", log)]).handle(ctx(), refuse=InvalidRequest("no"))
    assert reply.status == 400 and log == ["enter a", "exit a error 400"]


async def test_stream_end_break_and_cancel() -> None:
    log: list[str] = []
    reply = await pipeline("stream", log).handle(ctx())
    assert reply.stream is not None
    assert [c async for c in reply.stream] == [b"one", b"two"]
    await reply.stream.aclose()  # type: ignore[attr-defined]
    assert log[-2:] == ["exit b ok 200", "exit a ok 200"]

    log.clear()
    reply = await pipeline("break", log).handle(ctx())
    assert [c async for c in reply.stream] == [b"one"]  # type: ignore[union-attr]
    assert log[-1] == "exit a upstream_aborted 500"

    log.clear()
    reply = await pipeline("slow", log).handle(ctx())

    async def consume() -> None:
        async for _ in reply.stream:  # type: ignore[union-attr]
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await reply.stream.aclose()  # type: ignore[union-attr]
    assert log[-2:] == ["exit b client_disconnected 499", "exit a client_disconnected 499"]


async def test_stream_closed_before_it_started_still_exits_once() -> None:
    log: list[str] = []
    reply = await pipeline("stream", log).handle(ctx())
    await reply.stream.aclose()  # type: ignore[union-attr]
    await reply.stream.aclose()  # type: ignore[union-attr]
    assert log[2:] == ["exit b client_disconnected 499", "exit a client_disconnected 499"]


async def test_cancel_while_entering_exits_entered_stages() -> None:
    log: list[str] = []
    task = asyncio.ensure_future(pipeline("hang", log).handle(ctx()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-2:] == ["exit b client_disconnected 499", "exit a client_disconnected 499"]


class SlowExit(Recorder):
    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        await asyncio.sleep(0.05)
        self.log.append(f"exit {self.name} {outcome.kind} {outcome.status}")


async def test_cancelled_during_an_exit_still_runs_the_outer_exits() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("telemetry", log), SlowExit("quota", log), Terminal("body")])
    task = asyncio.ensure_future(p.handle(ctx()))
    await asyncio.sleep(0.01)  # inside the quota stage's exit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-1] == "exit telemetry ok 200", "the outer exit ran although the task was cancelled"


async def test_exits_mark_the_request_as_exiting() -> None:
    c = ctx()
    seen: list[bool] = []

    class Look(Recorder):
        async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
            seen.append(ctx.exiting)

    await Pipeline([Look("a", []), Terminal("body")]).handle(c)
    assert seen == [True]


async def test_deferred_exits_run_when_the_caller_says_once_the_answer_is_sent() -> None:
    log: list[str] = []
    c = ctx()
    reply = await pipeline("body", log).handle(c, defer=True)
    assert log == ["enter a", "enter b"] and reply.body == b"ok"  # nothing owed yet …
    assert c.exiting  # … and a client leaving from now on cancels nothing
    assert reply.after is not None
    await reply.after()
    assert log[2:] == ["exit b ok 200", "exit a ok 200"]
    # an error answer too; a stream's exits stay with the stream
    log.clear()
    failed = await pipeline("raise", log).handle(ctx(), defer=True)
    assert failed.status == 400 and log == ["enter a", "enter b"]
    assert failed.after is not None
    await failed.after()
    assert log[2:] == ["exit b error 400", "exit a error 400"]
    streamed = await pipeline("stream", log).handle(ctx(), defer=True)
    assert streamed.after is None and streamed.stream is not None


async def test_a_deferred_stream_runs_its_exits_when_closed_after_its_end() -> None:
    """Deferred, a stream that ended leaves its exits to the caller's aclose() (sent after
    the answer's end); one the client leaves runs them at once, as 499."""
    log: list[str] = []
    c = ctx()
    reply = await pipeline("stream", log).handle(c, defer=True)
    assert reply.stream is not None
    assert [chunk async for chunk in reply.stream] == [b"one", b"two"]
    assert log == ["enter a", "enter b"] and c.exiting
    await reply.stream.aclose()
    assert log[2:] == ["exit b ok 200", "exit a ok 200"]
    await reply.stream.aclose()  # once only
    assert len(log) == 4
    log.clear()
    left = await pipeline("slow", log).handle(ctx(), defer=True)
    assert left.stream is not None
    iterator = aiter(left.stream)
    assert await anext(iterator) == b"one"
    await left.stream.aclose()
    assert log[2:] == ["exit b client_disconnected 499", "exit a client_disconnected 499"]


async def test_a_whole_answer_goes_out_before_the_accounting(tmp_path: Path) -> None:
    """The gateway sends a whole answer, then runs the stages' exits (settling the quota,
    freeing the admission slot, the record): the caller does not wait for them. Seen from
    the server's side: the request is still in flight when its body is handed to the
    connection, and no longer right after."""
    app = create_app(make_settings(tmp_path))
    await app.startup()
    try:
        inflight = app.metrics.inflight._value  # the gauge's own value
        body = json.dumps({"model": "demo",
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        given = False
        at_body: list[float] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                at_body.append(inflight.get())

        scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "root_path": "", "query_string": b"", "client": ("10.0.0.1", 1234),
                 "server": ("gw", 80), "headers": [(b"content-type", b"application/json")]}
        await app(scope, receive, send)
        assert at_body == [1.0]
        assert inflight.get() == 0.0
        # a stream too: in flight until its end (the last, empty body message) is sent
        body = json.dumps({"model": "demo", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        given = False
        at_body.clear()
        await app(scope, receive, send)
        assert len(at_body) > 2 and set(at_body) == {1.0}
        assert inflight.get() == 0.0
    finally:
        await app.aclose()


async def test_the_accounting_runs_when_sending_a_whole_answer_fails_or_is_cancelled(
        tmp_path: Path) -> None:
    """The deferred exits run whatever becomes of the send: a client gone mid-write (the
    send raises) or the request's task cancelled while it waits to write (the server shutting
    down, the connection lost) still frees the admission slot and the in-flight count."""
    app = create_app(make_settings(tmp_path))
    await app.startup()
    try:
        inflight = app.metrics.inflight._value
        body = json.dumps({"model": "demo",
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "root_path": "", "query_string": b"", "client": ("10.0.0.1", 1234),
                 "server": ("gw", 80), "headers": [(b"content-type", b"application/json")]}

        def receiver() -> Callable[[], Awaitable[dict[str, Any]]]:
            given = False

            async def receive() -> dict[str, Any]:
                nonlocal given
                if not given:
                    given = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()
                raise AssertionError
            return receive

        async def gone(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                raise OSError("the client went away")

        with pytest.raises(OSError):
            await app(scope, receiver(), gone)
        assert inflight.get() == 0.0

        writing = asyncio.Event()

        async def stuck(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                writing.set()
                await asyncio.Event().wait()  # a client that never reads

        task = asyncio.create_task(app(scope, receiver(), stuck))
        await asyncio.wait_for(writing.wait(), 10)
        assert inflight.get() == 1.0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert inflight.get() == 0.0
    finally:
        await app.aclose()
