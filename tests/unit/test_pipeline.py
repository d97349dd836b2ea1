"""Exits run in reverse, exactly once, on every path: success, error, stream break, client gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import InvalidRequest, UpstreamFailed
from gatehouse.pipeline import Pipeline, StreamBroken


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
