"""The upstream stage: try the model's backends in turn until one starts answering.

Failover happens only before the first byte reaches the client: on a connect error, a timeout,
a dropped connection, any 5xx, a 429, 408, or the backend refusing the gateway's own
credentials (401/403), the next backend is tried. Once a stream has started it is never
replayed elsewhere; if it breaks, the client gets an SSE error event and the stream ends.

Every attempt's verdict goes to the circuit breaker of its (backend, model), counted against
the caller (breaker.py), so one caller's failing requests never open a circuit for the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatehouse.context import CANCELLED, Outcome, Reply, RequestContext, Usage
from gatehouse.errors import (
    AtCapacity,
    CallerHeldBack,
    GatehouseError,
    InvalidRequest,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gatehouse.pipeline import StreamBroken
from gatehouse.quota.policy import prompt_of, prompt_texts
from gatehouse.quota.tokenizer import Tokenizers
from gatehouse.schema.multipart import with_model
from gatehouse.schema.stage import UPLOAD_NOTE
from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.tracing import CallSpan, Tracing
from gatehouse.upstream.affinity import (
    HISTORY_NOTE,
    PATH_NOTE,
    PIN_NOTE,
    Affinity,
    continued,
)
from gatehouse.upstream.backend import UpstreamCall, UpstreamReply
from gatehouse.upstream.failures import (
    BackendFailure,
    Broken,
    ConnectFailed,
    TimedOut,
    TooLarge,
)
from gatehouse.upstream.responses_bridge import (
    input_items,
    response_id,
    skeleton,
    to_chat,
    to_response,
)
from gatehouse.upstream.responses_events import (
    ChatToResponses,
    failure_events,
    usage_dict,
)
from gatehouse.upstream.responses_tap import ResponsesTap, texts_of_response
from gatehouse.upstream.router import Router, Target
from gatehouse.upstream.shape import (
    Malformed,
    Whole,
    check_status,
    check_stream_start,
    check_whole,
)
from gatehouse.upstream.sse import StreamTap, choice_texts

# statuses below 500 that say "this backend, not this request": try the next one
FAILOVER_4XX = frozenset({401, 403, 408, 429})
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
REPLY_NOTE = "upstream.reply"
SLOT_NOTE = "upstream.slot"
CALL_NOTE = "upstream.call"  # the answering call: (target, started, span), ended in exit
BROKEN_NOTE = "upstream.broken"  # why a started stream broke (the call's error.type)
# what reading a backend's JSON of the wrong shape raises (a number where an object was due)
UNREADABLE = (AttributeError, TypeError, KeyError, IndexError, ValueError)
GENERATING = frozenset({"chat.completions", "completions", "embeddings", "responses"})


# the reply; a whole answer's body (and what was read of it) or a stream's first events, its
# tap and the rest; the Responses bridge of a chat-only backend
_Opened = tuple[UpstreamReply, bytes, Whole | None, StreamTap | None,
                AsyncIterator[bytes] | None, ChatToResponses | None]


def fails_over(status: int) -> bool:
    return status >= 500 or status in FAILOVER_4XX


def caller_of(ctx: RequestContext) -> str:
    """Who the circuit breakers count a failure against: the API key, the signed-in user, or
    for anonymous requests the client address (IPv6 by /64, which one client usually holds)."""
    who = ctx.principal
    kind = getattr(who, "kind", None)
    if kind == "key" and who.key_id:
        return "key:" + str(who.key_id)
    if kind == "session" and who.user_id:
        return "user:" + str(who.user_id)
    ip = ctx.client_ip
    if ip is None and ctx.client is not None:
        try:
            ip = ipaddress.ip_address(ctx.client[0])
        except ValueError:
            return "addr:" + ctx.client[0]
    if ip is None:
        return "anonymous"
    # in hex, because str() of an address costs microseconds on every request
    return f"ip4:{int(ip):08x}" if ip.version == 4 else f"ip6:{int(ip) >> 64:016x}/64"


@dataclass(slots=True)
class _Failures:
    details: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    timeouts: int = 0
    malformed: int = 0  # answers that were not answers (shape.py): failed like a 500
    others: int = 0
    retry_after: float = 0.0

    def add(self, detail: str, status: int | None = None, timeout: bool = False,
            retry_after: str | None = None, malformed: bool = False) -> None:
        self.details.append(detail)
        if status is not None:
            self.statuses.append(status)
        elif timeout:
            self.timeouts += 1
        elif malformed:
            self.malformed += 1
        else:
            self.others += 1
        if retry_after:
            try:
                self.retry_after = max(self.retry_after, float(retry_after))
            except ValueError:
                pass


def openai_error(body: bytes, status: int, backend: str) -> bytes:
    """A backend's refusal as OpenAI's error body: passed on as it is when it already is one,
    else wrapped (an empty body, a plain-text or HTML page, another JSON shape) with the
    backend's own words kept in the message, so every SDK can read it."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict) \
            and isinstance(data["error"].get("message"), str):
        return body
    said = ""
    if isinstance(data, dict):
        found = data.get("detail") or data.get("message") or data.get("error")
        said = found if isinstance(found, str) else orjson.dumps(data).decode()
    elif body:
        said = body.decode("utf-8", "replace")
    said = " ".join(said.split())[:500]
    message = (f"The model's backend refused the request with HTTP {status}"
               + (f": {said}" if said else " and no explanation") + ".")
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": f"upstream_{status}"},
                         "backend": backend})


class UpstreamStage:
    name = "upstream"

    def __init__(self, router: Router, metrics: Metrics,
                 tokenizers: Tokenizers | None = None, tracing: Tracing | None = None,
                 affinity: Affinity | None = None) -> None:
        self.router = router
        self.affinity = affinity
        self.metrics = metrics
        self.tokenizers = tokenizers or Tokenizers({}, "chars")
        self.tracing = tracing
        # attempts{backend, result="ok"}: looked up once per backend (labels() costs µs)
        self._ok: dict[str, Any] = {}

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.body is not None and ctx.model is not None
        failures = _Failures()
        full = 0
        caller = caller_of(ctx)
        bridged: dict[str, Any] | InvalidRequest | None = None  # the body as chat, or why not
        targets = self.router.order(ctx.model)
        pin = ctx.notes.get(PIN_NOTE)
        if pin is not None:  # only the backend holding the response has it: no failover
            targets = [t for t in targets if t.backend.name == pin]
        for target in targets:
            name = target.backend.name
            if ctx.endpoint == "responses" and target.api == "chat":
                if bridged is None:
                    try:
                        bridged = to_chat(continued(ctx), target.model)
                    except InvalidRequest as exc:
                        bridged = exc
                if isinstance(bridged, InvalidRequest):  # a Responses backend may take it
                    ctx.attempts.append(f"{name}:untranslatable")
                    continue
            slots = target.slots
            if slots is not None and not slots.take():
                ctx.attempts.append(f"{name}:at_capacity")
                full += 1
                continue
            if not target.breaker.allow(caller):
                if slots is not None:
                    slots.give()
                held = "caller_isolated" if target.breaker.isolates(caller) else "circuit_open"
                ctx.attempts.append(f"{name}:{held}")
                continue
            ctx.attempts.append(name)
            verdict = False
            started = time.perf_counter()
            span = self.tracing.call(ctx, name, target.model) if self.tracing else None
            try:
                reply, first, whole, tap, rest, bridge = await self._start(
                    ctx, target, span.traceparent if span is not None else None,
                    bridged if isinstance(bridged, dict) and target.api == "chat" else None)
                verdict = True
            except BackendFailure as exc:
                self._called(ctx, target, started, span, type(exc).__name__)
                target.breaker.failure(caller, connect=isinstance(exc, ConnectFailed))
                verdict = True
                if slots is not None:
                    slots.give()
                self.metrics.attempts.labels(name, type(exc).__name__).inc()
                ctx.attempts[-1] = f"{name}:{type(exc).__name__}"
                failures.add(f"{name}: {exc.detail}", timeout=isinstance(exc, TimedOut),
                             malformed=isinstance(exc, Malformed | TooLarge))
                continue
            finally:
                if not verdict:  # cancelled: the client went away while we waited
                    ctx.attempts[-1] = f"{name}:{CANCELLED}"  # the call was in flight
                    self._called(ctx, target, started, span, "cancelled")
                    target.breaker.release(caller)
                    if slots is not None:
                        slots.give()
            if fails_over(reply.status):
                if slots is not None:
                    slots.give()
                target.breaker.failure(caller)
                reply.close()
                self._called(ctx, target, started, span, str(reply.status), reply.status)
                self.metrics.attempts.labels(name, str(reply.status)).inc()
                ctx.attempts[-1] = f"{name}:{reply.status}"
                failures.add(f"{name}: answered {reply.status}", status=reply.status,
                             retry_after=reply.retry_after)
                continue
            if reply.status < 400:
                target.breaker.success(caller)
            else:  # a 4xx about the request: passed on, proves the backend alive, no more
                target.breaker.answered(caller)
            ok = self._ok.get(name)
            if ok is None:
                ok = self._ok[name] = self.metrics.attempts.labels(name, "ok")
            ok.inc()
            ctx.backend = name
            ctx.backend_model = target.model
            ctx.notes[CALL_NOTE] = (target, started, span)
            ctx.upstream_status = reply.status
            ctx.first_byte_at = time.perf_counter()
            ctx.notes[REPLY_NOTE] = reply
            if slots is not None:
                ctx.notes[SLOT_NOTE] = slots  # held until the answer or stream ends
            await self._answer(ctx, target, reply, first, whole, tap, rest, bridge)
            if tap is None and reply.status == 200 and self._stores(ctx, target):
                found = _stored_id(whole)
                if found is not None:
                    await self._remember(ctx, target, found)
            elif tap is None and reply.status == 200 and bridge is not None and bridge.store \
                    and ctx.reply is not None:
                await self._keep(ctx, orjson.loads(ctx.reply.body))
            return
        if isinstance(bridged, InvalidRequest) and not failures.details and not full:
            raise bridged  # no backend of the model could take the request
        if full and not failures.details:
            raise AtCapacity(f"Every backend of `{ctx.model}` is at capacity right now; try "
                             "again in a moment.", retry_after=1.0,
                             cause=f"{full} backend(s) at max_concurrency")
        raise self._give_up(ctx, failures, caller)

    def _called(self, ctx: RequestContext, target: Target, started: float,
                span: CallSpan | None, etype: str, status: int | None = None) -> None:
        """A call to a backend ended: its gen_ai.client.operation.duration, and its span."""
        self.metrics.genai.call(ctx.endpoint, ctx.model or "", target.model,
                                time.perf_counter() - started, etype)
        if span is not None:
            span.end(status, etype)

    async def _start(self, ctx: RequestContext, target: Target, traceparent: str | None,
                     chat: dict[str, Any] | None = None) -> _Opened:
        """Open the call. A whole answer is read here (bounded by the total timeout); a stream
        waits for its first event within the first-byte timeout, so a backend that stalls
        still leaves time to fail over. With ``chat`` (a Responses request translated for a
        chat-only backend) the chat endpoint is called and its answer translated back."""
        bridge = None
        endpoint = ctx.endpoint
        drop_usage = False
        if chat is not None:
            body = {**chat, "model": target.model}
            if not target.inject_stream_usage:
                body.pop("stream_options", None)
            endpoint = "chat.completions"
            bridge = ChatToResponses(ctx.body or {}, response_id(ctx.request_id),
                                     store=self.affinity is not None
                                     and (ctx.body or {}).get("store") is not False)
        else:
            body = dict(ctx.body or {})
            body["model"] = target.model
            if ctx.stream and target.inject_stream_usage and not ctx.include_usage \
                    and endpoint != "responses":
                body["stream_options"] = {**(body.get("stream_options") or {}),
                                          "include_usage": True}
                drop_usage = True
        path = ctx.notes.get(PATH_NOTE)
        upload = ctx.notes.get(UPLOAD_NOTE)
        call = UpstreamCall(endpoint, orjson.dumps(body) if path is None else b"", ctx.stream,
                            ctx.request_id, traceparent, ctx.method, path)
        if upload is not None:  # multipart, with the model renamed for this backend
            raw, content_type = upload
            call.body, call.content_type = with_model(raw, content_type, target.model), content_type
        if not ctx.stream:
            reply = await target.backend.open(call)
            try:
                check_status(reply.status)
                body_read = await reply.read()
                whole = check_whole(endpoint, reply.status, reply.content_type, body_read)
                return reply, body_read, whole, None, None, bridge
            except BaseException:
                reply.close()
                raise
        stream_reply: UpstreamReply | None = None
        try:
            async with asyncio.timeout(target.backend.first_byte_timeout):
                stream_reply = await target.backend.open(call)
                check_status(stream_reply.status)
                if stream_reply.status != 200:
                    return stream_reply, await stream_reply.read(), None, None, None, None
                tap = ResponsesTap() if endpoint == "responses" else StreamTap(drop_usage)
                chunks = stream_reply.chunks()
                first = b""
                started = False  # a byte other than blank space came
                while not first:
                    try:
                        chunk = await anext(chunks)
                        if not started and chunk.strip():  # its first bytes: an event stream?
                            check_stream_start(chunk)  # (what came before was blank space)
                            started = True
                        first = tap.feed(chunk)
                    except StopAsyncIteration:
                        first = tap.flush()
                        if not first:
                            raise Broken("stream ended before sending anything") from None
                if bridge is not None:
                    try:
                        first = bridge.feed(first)
                    except UNREADABLE as exc:  # e.g. "choices": 5
                        raise Malformed(f"answered a first event that is not a chat chunk "
                                        f"({exc!r})") from None
                return stream_reply, first, None, tap, chunks, bridge
        except TimeoutError:
            if stream_reply is not None:
                stream_reply.close()
            raise TimedOut(f"no first byte within {target.backend.first_byte_timeout:g}s") \
                from None
        except BaseException:
            if stream_reply is not None:
                stream_reply.close()
            raise

    async def _answer(self, ctx: RequestContext, target: Target, reply: UpstreamReply,
                      first: bytes, whole: Whole | None, tap: StreamTap | None,
                      rest: AsyncIterator[bytes] | None, bridge: ChatToResponses | None) -> None:
        ctx.upstream_request_id = reply.request_id
        if tap is None or rest is None:
            if reply.status == 200 and ctx.endpoint in GENERATING:
                ctx.usage = Usage.from_openai(whole.usage) if whole is not None else None
                if ctx.usage is None:
                    await self.tokenizers.get(ctx.model)  # see _relay
                    ctx.usage = self._count(ctx, *_texts_of(first))
                if bridge is not None:
                    first = _bridged(bridge, first, ctx.usage)
            reply.close()
            if reply.status >= 400:  # about the request: passed on, in OpenAI's shape
                body = openai_error(first, reply.status, target.backend.name)
                ctx.reply = Reply(reply.status, {"content-type": "application/json"}, body)
                return
            ctx.reply = Reply(reply.status, {"content-type": reply.content_type}, first)
            return
        ctx.reply = Reply(200, dict(SSE_HEADERS),
                          stream=self._relay(ctx, target, reply, first, tap, rest, bridge))

    async def _relay(self, ctx: RequestContext, target: Target, reply: UpstreamReply,
                     first: bytes, tap: StreamTap, rest: AsyncIterator[bytes],
                     bridge: ChatToResponses | None) -> AsyncGenerator[bytes, None]:
        try:
            if isinstance(tap, ResponsesTap) and tap.response is not None \
                    and isinstance(tap.response.get("id"), str) \
                    and tap.response.get("store") is not False and self._stores(ctx, target):
                # before the client can see the id and follow up on it, from any replica
                await self._remember(ctx, target, tap.response["id"])
            if tap.done and tap.usage is None:
                await self.tokenizers.get(ctx.model)  # see below
            yield first
            if not tap.done:
                async for chunk in rest:
                    out = tap.feed(chunk)
                    if out and bridge is not None:
                        out = bridge.feed(out)
                    if tap.done and tap.usage is None:
                        # the end, without usage: the model's tokenizer is loaded before the
                        # client gets its last event — a client that leaves on [DONE] (the
                        # SDKs do) must not cut the exact count short (÷ 4) or make a
                        # complete answer a 499
                        await self.tokenizers.get(ctx.model)
                    if out:
                        yield out
                    if tap.done:
                        # [DONE] is the end: do not wait for the backend to close (LiteLLM
                        # keeps it open a while), or a client that leaves at once — as the
                        # SDKs do — is counted as gone before its complete answer ended
                        break
            tail = tap.flush()
            if tail and bridge is not None:
                tail = bridge.feed(tail)
            if tail:
                yield tail
            if not tap.complete:
                raise Broken("stream ended before [DONE] or a finish_reason" if bridge or
                             not isinstance(tap, ResponsesTap) else
                             "stream ended before response.completed")
            if tap.usage is None:
                # the model's tokenizer, loaded when a backend first answers without usage,
                # not for every model on its first request: o200k alone is 55-64 MB per
                # worker, and most backends report usage (what if not: count_now's ÷ 4)
                await self.tokenizers.get(ctx.model)
            if bridge is not None:
                ctx.usage = tap.usage or self._count(ctx, tap.texts, tap.more_chars)
                end = bridge.finish(ctx.usage)
                if bridge.store:  # kept before the client can follow up on it
                    await self._keep(ctx, bridge.response)
                yield end
        except Exception as exc:
            detail = exc.detail if isinstance(exc, BackendFailure) else repr(exc)
            ctx.notes[BROKEN_NOTE] = type(exc).__name__
            target.breaker.failure(caller_of(ctx))
            self.metrics.attempts.labels(target.backend.name, "broken_stream").inc()
            error: GatehouseError = (
                UpstreamTimeout("The model stopped sending mid-answer and timed out.",
                                cause=detail) if isinstance(exc, TimedOut) else
                UpstreamFailed("The model's answer broke off mid-stream. The text so far is "
                               "incomplete; retry the request.", cause=detail))
            yield _broken(ctx, error, tap, bridge)
            raise StreamBroken(error) from exc
        finally:
            # what the backend reported, else what was passed on before the stream ended, the
            # client left or the backend broke off, counted by the model's tokenizer
            if tap.usage is None:
                self.tokenizers.warm(ctx.model)  # a broken stream's count: ÷ 4 until loaded
            ctx.usage = tap.usage or self._count(ctx, tap.texts, tap.more_chars)
            if tap.done:
                reply.finish()  # complete: its connection can go back to the pool
            else:
                reply.close()

    def _stores(self, ctx: RequestContext, target: Target) -> bool:
        """Whether this answer is a response its backend keeps (to be found again)."""
        return self.affinity is not None and ctx.endpoint == "responses" \
            and target.api == "responses" and (ctx.body or {}).get("store") is not False

    async def _remember(self, ctx: RequestContext, target: Target, response_id: str) -> None:
        assert self.affinity is not None
        await self.affinity.remember(response_id, target.backend.name, ctx.model or "",
                                     getattr(ctx.principal, "org_id", None))

    async def _keep(self, ctx: RequestContext, response: dict[str, Any]) -> None:
        """A translated response, kept by the gateway with its conversation (affinity.py)."""
        assert self.affinity is not None
        items = ctx.notes.get(HISTORY_NOTE, []) + input_items(ctx.body or {})
        await self.affinity.keep(response, items, ctx.model or "",
                                 getattr(ctx.principal, "org_id", None))

    def _count(self, ctx: RequestContext, texts: list[str], more_chars: int) -> Usage:
        """Usage counted by the gateway: the prompt as the quota stage counted it (or now),
        the completion from the text the backend sent."""
        prompt = ctx.counted_prompt
        if prompt is None:  # (a follow-up's: with the kept conversation, as the quota's is)
            body = continued(ctx)
            parts = prompt_texts(body)
            prompt = prompt_of(body, parts, self.tokenizers.count_now(ctx.model, parts))
        completion = self.tokenizers.count_now(ctx.model, texts)
        if more_chars:
            kept = sum(map(len, texts))
            completion += math.ceil(more_chars * completion / kept) if kept else 0
        return Usage(prompt, completion, prompt + completion, counted_by="gateway")

    def _give_up(self, ctx: RequestContext, failures: _Failures, caller: str
                 ) -> GatehouseError:
        cause = "; ".join(failures.details) or "every backend's circuit is open"
        tried = len(failures.details)
        if failures.malformed or \
                any(status >= 500 and status not in (503, 504) for status in failures.statuses):
            return UpstreamFailed(
                f"The model failed to answer ({tried} backend{'s' if tried != 1 else ''} "
                "tried).", cause=cause)
        if failures.timeouts and failures.timeouts + failures.statuses.count(504) == tried:
            # a stream times out waiting for its first token; a whole answer, for all of it
            said = ("The model did not start answering in time." if ctx.stream else
                    "The model did not finish its answer in time.")
            return UpstreamTimeout(said, cause=cause)
        targets = self.router.routes[ctx.model or ""].targets
        wait = min((t.breaker.retry_in(caller) for t in targets), default=1.0)
        retry_after = max(1.0, failures.retry_after, wait if tried == 0 else 1.0)
        if tried == 0 and any(a.endswith(":caller_isolated") for a in ctx.attempts):
            return CallerHeldBack(
                f"Your last requests to `{ctx.model}` all failed and none has succeeded since, "
                "so yours are held back until Retry-After. If they failed because of what they "
                "asked for, change the request.", retry_after=retry_after,
                cause="held back: this caller's last calls all failed, none succeeded since")
        return UpstreamUnavailable(
            f"The model `{ctx.model}` is unavailable right now. Try again in a few seconds.",
            cause=cause, retry_after=retry_after)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        # whatever happened to the stream (even if it never started), give the connection back
        reply = ctx.notes.pop(REPLY_NOTE, None)
        if reply is not None:
            reply.close()
        call = ctx.notes.pop(CALL_NOTE, None)
        if call is not None:
            status = ctx.upstream_status or 0
            etype = ("cancelled" if outcome.kind == "client_disconnected" else
                     ctx.notes.get(BROKEN_NOTE) or (str(status) if status >= 400 else ""))
            target, started, span = call
            self._called(ctx, target, started, span, etype, status)
        slots = ctx.notes.pop(SLOT_NOTE, None)
        if slots is not None:
            slots.give()


def _broken(ctx: RequestContext, error: GatehouseError, tap: StreamTap,
            bridge: ChatToResponses | None) -> bytes:
    """How a stream that broke off ends: an SSE error event; for the Responses API, its typed
    ``error`` and ``response.failed`` events."""
    if bridge is not None:
        return bridge.fail(error, ctx.request_id)
    if isinstance(tap, ResponsesTap):
        response = tap.response or skeleton(ctx.body or {}, response_id(ctx.request_id),
                                            "in_progress")
        return failure_events(error, response, tap.sequence, ctx.request_id)
    return b"data: " + error.body(ctx.request_id) + b"\n\n"


def _bridged(bridge: ChatToResponses, chat: bytes, usage: Usage) -> bytes:
    """A chat-only backend's whole answer as the Response the client asked for."""
    try:
        data: Any = orjson.loads(chat)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailed("The model's backend answered with something that is not a chat "
                             "completion.", cause=f"not a JSON object: {chat[:200]!r}")
    counted = None if isinstance(data.get("usage"), dict) else usage_dict(usage)
    try:
        return orjson.dumps(to_response(bridge.body, data, bridge.rid, counted, bridge.store))
    except UNREADABLE as exc:  # e.g. a choice whose "message" is 5
        raise UpstreamFailed("The model's backend answered with something that is not a chat "
                             "completion.", cause=f"untranslatable: {exc!r}") from None


def _texts_of(body: bytes) -> tuple[list[str], int]:
    """The completion text of a whole answer (chat, completions, responses; embeddings have
    none)."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], 0
    if isinstance(data, dict) and isinstance(data.get("output"), list):
        return texts_of_response(data), 0
    choices = data.get("choices") if isinstance(data, dict) else None
    texts: list[str] = []
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            texts += choice_texts(choice)
    return texts, 0


def _stored_id(whole: Whole | None) -> str | None:
    """The id of a Response its backend says it stored (``store`` not false)."""
    if whole is None or whole.store is False:
        return None
    return whole.id if isinstance(whole.id, str) else None
