"""The pipeline: stages entered in order, exited in reverse on every path.

A stage is any object with ``name``, ``async enter(ctx)`` and ``async exit(ctx, outcome)``.
``enter`` may raise a :class:`GatehouseError` to answer the request itself; the last stage
(upstream, or a local handler such as the model list) sets ``ctx.reply``. Exits run for every
stage whose ``enter`` returned — for whole answers before ``handle`` returns, or with
``defer=True`` after the server has sent the answer (``Reply.after``: the accounting — settling
the quota, freeing the admission slot, the request's record — is then not in the caller's
wait); for streams when the stream ends, breaks, times out or the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Protocol

from gatehouse.context import ByteStream, Outcome, Reply, RequestContext
from gatehouse.errors import GatehouseError, InternalError
from gatehouse.htmlpage import NOSNIFF, PAGE_HEADERS, error_page

log = logging.getLogger("gatehouse.pipeline")


class Stage(Protocol):
    name: str

    async def enter(self, ctx: RequestContext) -> None: ...

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None: ...


class StreamBroken(Exception):
    """Raised inside a reply stream when the upstream fails after the first byte was sent.

    The stream has already told the client (an SSE error event); the pipeline records the
    outcome with this error."""

    def __init__(self, error: GatehouseError) -> None:
        super().__init__(error.message)
        self.error = error


class Answered(Exception):
    """Raised by a stage that answers the request itself with a ready reply (the edge's
    challenge page): the later stages are skipped and the exits run as for any answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    async def handle(self, ctx: RequestContext, refuse: GatehouseError | None = None, *,
                     defer: bool = False) -> Reply:
        """Run the request through the stages. With ``refuse``, every stage is entered (so the
        edge may still block and telemetry still records) and then ``refuse`` is answered.
        With ``defer``, a whole answer comes back with its exits in ``Reply.after``, for the
        caller to await once the answer is sent (always: they free what the request holds)."""
        entered: list[Stage] = []
        try:
            for stage in self.stages:
                await stage.enter(ctx)
                entered.append(stage)
            if refuse is not None:
                raise refuse
        except GatehouseError as exc:
            return await self._fail(ctx, entered, exc, defer)
        except Answered as done:
            ctx.reply = done.reply
            return await self._whole(ctx, entered, done.reply, defer)
        except asyncio.CancelledError:
            refused = ctx.refused  # the connection layer answered (gatehouse/server.py)
            await self._exits(ctx, entered, Outcome("client_disconnected", 499) if refused is None
                              else Outcome("error", refused.status, refused))
            raise
        except Exception as exc:  # a bug: answer honestly, keep the cause for the log
            log.exception("unhandled error in pipeline", extra={"request_id": ctx.request_id})
            return await self._fail(ctx, entered, InternalError(
                "The gateway failed to handle this request.", cause=repr(exc)), defer)
        reply = ctx.reply
        if reply is None:
            return await self._fail(ctx, entered, InternalError(
                "The gateway produced no answer.", cause="no stage set ctx.reply"), defer)
        if reply.stream is None:
            return await self._whole(ctx, entered, reply, defer)
        reply.stream = self._guard(ctx, entered, reply.stream, reply.status, defer)
        return reply

    async def _fail(self, ctx: RequestContext, entered: list[Stage], exc: GatehouseError,
                    defer: bool = False) -> Reply:
        reply = error_reply(ctx, exc)
        ctx.reply = reply
        return await self._whole(ctx, entered, reply, defer, Outcome("error", exc.status, exc))

    async def _whole(self, ctx: RequestContext, entered: list[Stage], reply: Reply,
                     defer: bool, outcome: Outcome | None = None) -> Reply:
        """A whole answer's exits: now, or (``defer``) in ``reply.after``."""
        if outcome is None:
            outcome = Outcome("ok" if reply.status < 400 else "error", reply.status)
        if not defer:
            await self._exits(ctx, entered, outcome)
            return reply
        ctx.decided()  # its exits run after the send
        reply.after = partial(self._exits, ctx, entered, outcome)
        return reply

    def _guard(self, ctx: RequestContext, entered: list[Stage],
               stream: ByteStream, status: int, defer: bool = False) -> GuardedStream:
        return GuardedStream(self, ctx, entered, stream, status, defer)

    @staticmethod
    async def _exits(ctx: RequestContext, entered: list[Stage], outcome: Outcome) -> None:
        """Run every exit, in reverse. ``ctx.exiting`` tells the disconnect watcher not to
        cancel from here on (a settle must not be cut short because the client left); any
        other cancellation still lets the remaining exits run before it is raised."""
        ctx.decided()  # (a deferred answer's was, when its reply was ready)
        cancelled: BaseException | None = None
        for stage in reversed(entered):
            try:
                await stage.exit(ctx, outcome)
            except Exception:  # one stage's exit must never skip the others'
                log.exception("exit of stage %s failed", stage.name,
                              extra={"request_id": ctx.request_id})
            except BaseException as exc:  # cancelled: finish the chain, then give it back
                cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled

def error_reply(ctx: RequestContext, exc: GatehouseError) -> Reply:
    return answer(exc, ctx.request_id, ctx.wants_html)


def answer(exc: GatehouseError, request_id: str | None, html: bool) -> Reply:
    """The error as a browser page or as OpenAI's JSON body."""
    if html:
        headers = {**PAGE_HEADERS, **exc.response_headers(),
                   "content-type": "text/html; charset=utf-8"}
        return Reply(exc.status, headers, error_page(exc, request_id).encode())
    headers = exc.response_headers()  # a fresh dict
    headers.update(NOSNIFF)
    headers["content-type"] = "application/json"
    return Reply(exc.status, headers, exc.body(request_id))


class GuardedStream:
    """A reply stream whose end — however it comes — runs the stages' exits exactly once.

    Iterate it, then ``aclose()`` it; closing a stream that never started still runs the
    exits (the client went away before the first chunk was sent)."""

    def __init__(self, pipeline: Pipeline, ctx: RequestContext, entered: list[Stage],
                 stream: ByteStream, status: int, defer: bool = False) -> None:
        self._pipeline, self._ctx, self._entered = pipeline, ctx, entered
        self._stream, self._status = stream, status
        self._iterating: AsyncIterator[bytes] | None = None
        self._done = False
        # deferred: a stream that ended (not one the client left) runs its exits when the
        # caller closes it, after it has sent the answer's end — not before that is sent
        self._defer = defer
        self._ended: Outcome | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._iterating = self._run()
        return self._iterating

    async def _run(self) -> AsyncIterator[bytes]:
        outcome = Outcome("ok", self._status)
        try:
            async for chunk in self._stream:
                yield chunk
        except StreamBroken as exc:
            outcome = Outcome("upstream_aborted", exc.error.status, exc.error)
        except (asyncio.CancelledError, GeneratorExit):
            outcome = Outcome("client_disconnected", 499)
            await self._finish(outcome)
            raise
        except Exception as exc:
            log.exception("unhandled error in stream", extra={"request_id": self._ctx.request_id})
            outcome = Outcome("error", 500, InternalError("stream failed", cause=repr(exc)))
        if self._defer:  # its exits run once the end is sent
            self._ctx.decided()
            self._ended = outcome
        else:
            await self._finish(outcome)

    async def _finish(self, outcome: Outcome) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._stream.aclose()
        finally:
            await self._pipeline._exits(self._ctx, self._entered, outcome)
            self._ctx.reply = None  # ctx → reply → this stream → ctx: break the cycle

    async def aclose(self) -> None:
        if self._iterating is not None:
            await self._iterating.aclose()  # type: ignore[attr-defined]
        await self._finish(self._ended or Outcome("client_disconnected", 499))

