"""The upstream stage: try the model's backends in turn until one starts answering.

Failover happens only before the first byte reaches the client: on a connect error, a timeout,
a 5xx (or 429, or the backend refusing the gateway's own credentials), the next backend is
tried. Once a stream has started it is never replayed elsewhere; if it breaks, the client gets
an SSE error event and the stream ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from gatehouse.context import Outcome, Reply, RequestContext, Usage
from gatehouse.errors import GatehouseError, UpstreamFailed, UpstreamTimeout, UpstreamUnavailable
from gatehouse.pipeline import StreamBroken
from gatehouse.telemetry.metrics import Metrics
from gatehouse.upstream.backend import (BackendFailure, Broken, TimedOut, UpstreamCall,
                                        UpstreamReply)
from gatehouse.upstream.router import Router, Target
from gatehouse.upstream.sse import StreamTap

# statuses that say "this backend, not this request": try the next one
FAILOVER_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504})
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}


class UpstreamStage:
    name = "upstream"

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self.router = router
        self.metrics = metrics

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.body is not None and ctx.model is not None
        failures: list[tuple[str, BaseException | int]] = []
        for target in self.router.order(ctx.model):
            name = target.backend.name
            if not target.breaker.allow():
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
                self.metrics.attempts.labels(name, type(exc).__name__).inc()
                ctx.attempts[-1] = f"{name}:{type(exc).__name__}"
                failures.append((exc.detail, exc))
                continue
            finally:
                if not verdict:  # cancelled: the client went away while we waited
                    target.breaker.release()
            if reply.status in FAILOVER_STATUSES:
                target.breaker.failure()
                reply.close()
                self.metrics.attempts.labels(name, str(reply.status)).inc()
                ctx.attempts[-1] = f"{name}:{reply.status}"
                failures.append((f"backend {name} answered {reply.status}", reply.status))
                continue
            target.breaker.success()
            self.metrics.attempts.labels(name, "ok").inc()
            ctx.backend = name
            ctx.first_byte_at = time.perf_counter()
            self._answer(ctx, target, reply, first, tap, rest)
            return
        raise self._give_up(ctx, failures)

    async def _start(self, ctx: RequestContext, target: Target
                     ) -> tuple[UpstreamReply, bytes, StreamTap | None, AsyncIterator[bytes] | None]:
        """Open the call and, for a stream, wait for its first bytes — all within the
        first-byte timeout, so a backend that stalls still leaves time to fail over."""
        body = dict(ctx.body or {})
        body["model"] = target.model
        drop_usage = False
        if ctx.stream and ctx.endpoint != "embeddings" and target.inject_stream_usage \
                and not ctx.include_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            drop_usage = True
        call = UpstreamCall(ctx.endpoint, orjson.dumps(body), ctx.stream, ctx.request_id)
        reply: UpstreamReply | None = None
        try:
            async with asyncio.timeout(target.backend.first_byte_timeout):
                reply = await target.backend.open(call)
                if not ctx.stream or reply.status != 200:
                    return reply, await reply.read(), None, None
                tap = StreamTap(drop_usage)
                chunks = reply.chunks()
                first = b""
                while not first:
                    try:
                        first = tap.feed(await anext(chunks))
                    except StopAsyncIteration:
                        first = tap.flush()
                        if not first:
                            raise Broken("stream ended before sending anything") from None
                        break
                return reply, first, tap, chunks
        except TimeoutError:
            if reply is not None:
                reply.close()
            raise TimedOut(f"no first byte within {target.backend.first_byte_timeout:g}s") \
                from None
        except BaseException:
            if reply is not None:
                reply.close()
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
            if not tap.done:
                raise Broken("stream ended without its [DONE] marker")
        except BackendFailure as exc:
            target.breaker.failure()
            self.metrics.attempts.labels(target.backend.name, "broken_stream").inc()
            error: GatehouseError = (
                UpstreamTimeout("The model stopped sending mid-answer and timed out.",
                                cause=exc.detail) if isinstance(exc, TimedOut) else
                UpstreamFailed("The model's answer broke off mid-stream. The text so far is "
                               "incomplete; retry the request.", cause=exc.detail))
            yield b"data: " + error.body(ctx.request_id) + b"\n\n"
            raise StreamBroken(error) from exc
        finally:
            ctx.usage = tap.usage
            reply.close()

    def _give_up(self, ctx: RequestContext,
                 failures: list[tuple[str, BaseException | int]]) -> GatehouseError:
        cause = "; ".join(detail for detail, _ in failures) or "every backend's circuit is open"
        tried = len(failures)
        if any(isinstance(f, int) and f >= 500 for _, f in failures):
            return UpstreamFailed(
                f"The model failed to answer ({tried} backend{'s' if tried != 1 else ''} "
                "tried).", cause=cause)
        if failures and all(isinstance(f, TimedOut) for _, f in failures):
            return UpstreamTimeout("The model did not start answering in time.", cause=cause)
        targets = self.router.routes[ctx.model or ""].targets
        wait = min((t.breaker.retry_in() for t in targets), default=1.0)
        return UpstreamUnavailable(
            f"The model `{ctx.model}` is unavailable right now. Try again in a few seconds.",
            cause=cause, retry_after=max(1.0, wait))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None


def _usage_of(body: bytes) -> Usage | None:
    if b'"usage"' not in body:
        return None
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return Usage.from_openai(data.get("usage")) if isinstance(data, dict) else None
