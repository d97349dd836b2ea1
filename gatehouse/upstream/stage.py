"""The upstream stage: try the model's backends in turn until one starts answering.

Failover happens only before the first byte reaches the client: on a connect error, a timeout,
a dropped connection, any 5xx, a 429, 408, or the backend refusing the gateway's own
credentials (401/403), the next backend is tried. Once a stream has started it is never
replayed elsewhere; if it breaks, the client gets an SSE error event and the stream ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatehouse.context import Outcome, Reply, RequestContext, Usage
from gatehouse.errors import (
    AtCapacity,
    GatehouseError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gatehouse.pipeline import StreamBroken
from gatehouse.telemetry.metrics import Metrics
from gatehouse.upstream.backend import (
    BackendFailure,
    Broken,
    TimedOut,
    UpstreamCall,
    UpstreamReply,
)
from gatehouse.upstream.router import Router, Target
from gatehouse.upstream.sse import StreamTap

# statuses below 500 that say "this backend, not this request": try the next one
FAILOVER_4XX = frozenset({401, 403, 408, 429})
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
REPLY_NOTE = "upstream.reply"
SLOT_NOTE = "upstream.slot"


def fails_over(status: int) -> bool:
    return status >= 500 or status in FAILOVER_4XX


@dataclass(slots=True)
class _Failures:
    details: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    timeouts: int = 0
    others: int = 0
    retry_after: float = 0.0

    def add(self, detail: str, status: int | None = None, timeout: bool = False,
            retry_after: str | None = None) -> None:
        self.details.append(detail)
        if status is not None:
            self.statuses.append(status)
        elif timeout:
            self.timeouts += 1
        else:
            self.others += 1
        if retry_after:
            try:
                self.retry_after = max(self.retry_after, float(retry_after))
            except ValueError:
                pass


class UpstreamStage:
    name = "upstream"

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self.router = router
        self.metrics = metrics

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.body is not None and ctx.model is not None
        failures = _Failures()
        full = 0
        for target in self.router.order(ctx.model):
            name = target.backend.name
            slots = target.slots
            if slots is not None and not slots.take():
                ctx.attempts.append(f"{name}:at_capacity")
                full += 1
                continue
            if not target.breaker.allow():
                if slots is not None:
                    slots.give()
                ctx.attempts.append(f"{name}:circuit_open")
                continue
            ctx.attempts.append(name)
            verdict = False
            try:
                reply, first, tap, rest = await self._start(ctx, target)
                verdict = True
            except BackendFailure as exc:
                target.breaker.failure()
                verdict = True
                if slots is not None:
                    slots.give()
                self.metrics.attempts.labels(name, type(exc).__name__).inc()
                ctx.attempts[-1] = f"{name}:{type(exc).__name__}"
                failures.add(f"{name}: {exc.detail}", timeout=isinstance(exc, TimedOut))
                continue
            finally:
                if not verdict:  # cancelled: the client went away while we waited
                    target.breaker.release()
                    if slots is not None:
                        slots.give()
            if fails_over(reply.status):
                if slots is not None:
                    slots.give()
                target.breaker.failure()
                reply.close()
                self.metrics.attempts.labels(name, str(reply.status)).inc()
                ctx.attempts[-1] = f"{name}:{reply.status}"
                failures.add(f"{name}: answered {reply.status}", status=reply.status,
                             retry_after=reply.retry_after)
                continue
            target.breaker.success()
            self.metrics.attempts.labels(name, "ok").inc()
            ctx.backend = name
            ctx.upstream_status = reply.status
            ctx.first_byte_at = time.perf_counter()
            ctx.notes[REPLY_NOTE] = reply
            if slots is not None:
                ctx.notes[SLOT_NOTE] = slots  # held until the answer or stream ends
            self._answer(ctx, target, reply, first, tap, rest)
            return
        if full and not failures.details:
            raise AtCapacity(f"Every backend of `{ctx.model}` is at capacity right now; try "
                             "again in a moment.", retry_after=1.0,
                             cause=f"{full} backend(s) at max_concurrency")
        raise self._give_up(ctx, failures)

    async def _start(self, ctx: RequestContext, target: Target
                     ) -> tuple[UpstreamReply, bytes, StreamTap | None, AsyncIterator[bytes] | None]:
        """Open the call. A whole answer is read here (bounded by the total timeout); a stream
        waits for its first event within the first-byte timeout, so a backend that stalls
        still leaves time to fail over."""
        body = dict(ctx.body or {})
        body["model"] = target.model
        drop_usage = False
        if ctx.stream and target.inject_stream_usage and not ctx.include_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            drop_usage = True
        call = UpstreamCall(ctx.endpoint, orjson.dumps(body), ctx.stream, ctx.request_id)
        if not ctx.stream:
            reply = await target.backend.open(call)
            try:
                return reply, await reply.read(), None, None
            except BaseException:
                reply.close()
                raise
        stream_reply: UpstreamReply | None = None
        try:
            async with asyncio.timeout(target.backend.first_byte_timeout):
                stream_reply = await target.backend.open(call)
                if stream_reply.status != 200:
                    return stream_reply, await stream_reply.read(), None, None
                tap = StreamTap(drop_usage)
                chunks = stream_reply.chunks()
                first = b""
                while not first:
                    try:
                        first = tap.feed(await anext(chunks))
                    except StopAsyncIteration:
                        first = tap.flush()
                        if not first:
                            raise Broken("stream ended before sending anything") from None
                return stream_reply, first, tap, chunks
        except TimeoutError:
            if stream_reply is not None:
                stream_reply.close()
            raise TimedOut(f"no first byte within {target.backend.first_byte_timeout:g}s") \
                from None
        except BaseException:
            if stream_reply is not None:
                stream_reply.close()
            raise

    def _answer(self, ctx: RequestContext, target: Target, reply: UpstreamReply,
                first: bytes, tap: StreamTap | None, rest: AsyncIterator[bytes] | None) -> None:
        if tap is None or rest is None:
            if reply.status == 200:
                ctx.usage = _usage_of(first)
            reply.close()
            ctx.reply = Reply(reply.status, {"content-type": reply.content_type}, first)
            return
        ctx.reply = Reply(200, dict(SSE_HEADERS),
                          stream=self._relay(ctx, target, reply, first, tap, rest))

    async def _relay(self, ctx: RequestContext, target: Target, reply: UpstreamReply,
                     first: bytes, tap: StreamTap, rest: AsyncIterator[bytes]
                     ) -> AsyncGenerator[bytes, None]:
        try:
            yield first
            async for chunk in rest:
                out = tap.feed(chunk)
                if out:
                    yield out
            tail = tap.flush()
            if tail:
                yield tail
            if not tap.complete:
                raise Broken("stream ended before [DONE] or a finish_reason")
        except Exception as exc:
            detail = exc.detail if isinstance(exc, BackendFailure) else repr(exc)
            target.breaker.failure()
            self.metrics.attempts.labels(target.backend.name, "broken_stream").inc()
            error: GatehouseError = (
                UpstreamTimeout("The model stopped sending mid-answer and timed out.",
                                cause=detail) if isinstance(exc, TimedOut) else
                UpstreamFailed("The model's answer broke off mid-stream. The text so far is "
                               "incomplete; retry the request.", cause=detail))
            yield b"data: " + error.body(ctx.request_id) + b"\n\n"
            raise StreamBroken(error) from exc
        finally:
            ctx.usage = tap.usage
            reply.close()

    def _give_up(self, ctx: RequestContext, failures: _Failures) -> GatehouseError:
        cause = "; ".join(failures.details) or "every backend's circuit is open"
        tried = len(failures.details)
        if any(status >= 500 and status not in (503, 504) for status in failures.statuses):
            return UpstreamFailed(
                f"The model failed to answer ({tried} backend{'s' if tried != 1 else ''} "
                "tried).", cause=cause)
        if failures.timeouts and failures.timeouts + failures.statuses.count(504) == tried:
            return UpstreamTimeout("The model did not start answering in time.", cause=cause)
        targets = self.router.routes[ctx.model or ""].targets
        wait = min((t.breaker.retry_in() for t in targets), default=1.0)
        return UpstreamUnavailable(
            f"The model `{ctx.model}` is unavailable right now. Try again in a few seconds.",
            cause=cause, retry_after=max(1.0, failures.retry_after, wait if tried == 0 else 1.0))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        # whatever happened to the stream (even if it never started), give the connection back
        reply = ctx.notes.pop(REPLY_NOTE, None)
        if reply is not None:
            reply.close()
        slots = ctx.notes.pop(SLOT_NOTE, None)
        if slots is not None:
            slots.give()


def _usage_of(body: bytes) -> Usage | None:
    if b'"usage"' not in body:
        return None
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return Usage.from_openai(data.get("usage")) if isinstance(data, dict) else None
