"""The chat's send endpoint (``POST /chat/send``) as the pipeline of ``/v1/chat/completions``
with one stage more: the same edge, identity (the session cookie and its CSRF header), schema,
tier, quota (the web tiers' limits), admission (by tier priority) and upstream (failover), and
the same telemetry (component ``web``, since the path is not under /v1).

:class:`ChatStage` sits after identity: it reads the page's small JSON body, checks the
conversation is the caller's, saves the person's message and an empty answer, and hands the
schema stage the OpenAI request built from the conversation. :class:`ChatPipeline` reads the
answer's stream in a task of its own (gatehouse/web/generation.py) and answers the page with
events it can follow — and its errors with the view of gatehouse/web/chatwords.py beside the
API's own error body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gatehouse.config import Settings
from gatehouse.context import ByteStream, Outcome, Reply, RequestContext
from gatehouse.errors import (
    Conflict,
    GatehouseError,
    IdentityUnavailable,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    RequestTooLarge,
    SessionExpired,
    unstorable,
)
from gatehouse.identity.stage import SIGNED_OUT
from gatehouse.pipeline import Pipeline, Stage
from gatehouse.schema.stage import parse_json, read_body
from gatehouse.store.conversations import Conversations, title_from
from gatehouse.store.db import refused_value
from gatehouse.store.tables import ChatMessage, Conversation
from gatehouse.web.chatwords import view
from gatehouse.web.generation import (
    SAVE_EVERY,
    Generation,
    Generations,
    SSEReader,
    apply,
    event,
)

log = logging.getLogger("gatehouse.web.chat")

PATH = "/chat/send"
SSE = {"content-type": "text/event-stream", "cache-control": "no-store",
       "x-content-type-options": "nosniff"}


class ConversationTooLong(InvalidRequest):
    code = "context_length_exceeded"  # OpenAI's code for the same thing
    title = "The conversation is too long for the model"
    advice = "Start a new conversation."


@dataclass(slots=True)
class Turn:
    conversation: Conversation
    answer: ChatMessage
    user_message: ChatMessage | None
    generation: Generation


def allowed_models(settings: Settings, tier: str, served: Sequence[str]) -> list[str]:
    """The models a tier may use, in the order they are served ([tiers.X] models)."""
    own = settings.tiers.get(tier)
    only = own.models if own is not None else []
    return [m for m in served if not only or m in only]


def _text(body: dict[str, Any], name: str, limit: int, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidRequest(f"`{name}` must be a non-empty string.", param=name,
                             code="invalid_type")
    if len(value) > limit:
        raise RequestTooLarge(f"`{name}` is {len(value):,} characters; at most {limit:,} are "
                              "accepted.", param=name)
    return value


class ChatStage:
    name = "chat"

    def __init__(self, settings: Settings, conversations: Conversations,
                 served: Callable[[], Sequence[str]], generations: Generations) -> None:
        self.settings = settings
        self.web = settings.web
        self.conversations = conversations
        self.served = served
        self.generations = generations

    async def enter(self, ctx: RequestContext) -> None:
        try:
            await self._prepare(ctx)
        except IntegrityError:  # another tab's message took this place in the conversation
            raise Conflict("Another message was sent to this conversation at the same time; "
                           "reload it and send again.", param="conversation") from None
        except (SQLAlchemyError, OSError) as exc:
            if refused_value(exc):  # what was sent, not the store being down
                raise unstorable(exc) from None
            raise IdentityUnavailable("The chat cannot reach its store right now.",
                                      retry_after=5, cause=repr(exc)) from None

    async def _prepare(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        user_id = getattr(principal, "user_id", None)
        if principal is None or principal.kind == "anonymous":
            raise SessionExpired(SIGNED_OUT)
        if principal.kind != "session" or not user_id:
            raise PermissionDenied("The chat is for people signed in on this site; programs "
                                   "call POST /v1/chat/completions with an API key.")
        limit = self.web.max_message_chars
        raw = await read_body(ctx, 4 * limit + 4096)  # UTF-8 and JSON escapes
        body = parse_json(raw, ctx.headers.get("content-type", ""))
        model = _text(body, "model", 128)
        assert model is not None
        if model not in allowed_models(self.settings, principal.tier, self.served()):
            raise ModelNotFound(f"The model `{model}` does not exist or you do not have access "
                                "to it.", param="model")
        regenerate = body.get("regenerate") is True
        content = _text(body, "content", limit, required=not regenerate)
        edit = _text(body, "edit", 40, required=False)
        wanted = body.get("conversation")
        if wanted is not None and not isinstance(wanted, str):
            raise InvalidRequest("`conversation` must be a conversation id.",
                                 param="conversation", code="invalid_type")
        if wanted:
            conversation = await self.conversations.get(user_id, wanted)
            if conversation is None:
                raise NotFound("There is no such conversation.", param="conversation")
            history = await self.conversations.messages(conversation.id)
        elif regenerate or edit:
            raise InvalidRequest("Regenerate and edit need a `conversation`.",
                                 param="conversation", code="missing_required_parameter")
        else:
            conversation, history = None, []
        drop_from, history = _cut(history, regenerate, edit)
        messages = [{"role": m.role, "content": m.content} for m in history
                    if m.content and m.status != "error"]
        if content is not None and not regenerate:
            messages.append({"role": "user", "content": content})
        if not messages or messages[-1]["role"] != "user":
            raise InvalidRequest("There is no message of yours to answer.", param="content",
                                 code="missing_required_parameter")
        if sum(len(m["content"]) for m in messages) > self.web.max_conversation_chars:
            raise ConversationTooLong(
                f"This conversation has grown past the {self.web.max_conversation_chars:,} "
                "characters the chat sends to the model.", param="content")
        rows = [] if regenerate else [("user", messages[-1]["content"], "done")]
        rows.append(("assistant", "", "streaming"))
        if conversation is None:  # a new one: it and its first two messages in one go
            assert content is not None
            conversation, made = await self.conversations.create(
                user_id, title_from(content), model, rows, ctx.request_id)
        else:
            made = await self.conversations.append(conversation.id, rows, model=model,
                                                   request_id=ctx.request_id,
                                                   drop_from=drop_from)
        generation = Generation(made[-1].id, conversation.id, user_id, ctx.request_id)
        ctx.notes["chat"] = Turn(conversation, made[-1], None if regenerate else made[0],
                                  generation)
        request: dict[str, Any] = {"model": model, "messages": messages, "stream": True,
                                   "stream_options": {"include_usage": True}}
        if self.web.max_answer_tokens is not None:
            request["max_tokens"] = self.web.max_answer_tokens
        _hand_on(ctx, orjson.dumps(request))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        turn: Turn | None = ctx.notes.get("chat")
        if turn is None:
            return
        gen = turn.generation
        shown: dict[str, Any] | None = None
        if outcome.kind == "ok" and outcome.status < 400:
            status = "done"
        elif outcome.kind == "client_disconnected":
            status = "stopped" if gen.stopped else "incomplete"
        elif outcome.kind == "upstream_aborted":
            status = "incomplete"
            shown = view({**(gen.broken or {}), "error": {
                **((gen.broken or {}).get("error") or {}), "code": "stream_broken"}})
        else:
            status = "error"
            shown = error_view(ctx, outcome)
        ctx.notes["chat_view"] = shown
        try:
            await self.conversations.save(gen.message_id, gen.text, status,
                                          orjson.dumps(shown).decode() if shown else None)
        except Exception:  # the answer is still shown; only the stored copy lags
            log.exception("saving answer %s failed", gen.message_id)
        gen.finish(status, shown)


def _cut(history: list[ChatMessage], regenerate: bool,
         edit: str | None) -> tuple[int | None, list[ChatMessage]]:
    """Where regenerate or edit cut the conversation (the first ``seq`` dropped) and what is
    kept before it."""
    if edit:
        for i, m in enumerate(history):
            if m.id == edit and m.role == "user":
                return m.seq, history[:i]
        raise NotFound("There is no such message of yours in this conversation.", param="edit")
    if regenerate:
        for i in range(len(history) - 1, -1, -1):
            if history[i].role == "user":
                if i + 1 < len(history):
                    return history[i + 1].seq, history[:i + 1]
                return None, history
        raise InvalidRequest("There is no message of yours to answer again.",
                             param="regenerate", code="invalid_value")
    if history and history[-1].role == "assistant" and history[-1].status == "error":
        # a failed answer is replaced by the next one, not kept between messages
        return history[-1].seq, history[:-1]
    return None, history


def _hand_on(ctx: RequestContext, raw: bytes) -> None:
    """Let the schema stage read ``raw`` as the request's body."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    ctx.receive = receive
    ctx.headers = {**ctx.headers, "content-length": str(len(raw)),
                   "content-type": "application/json"}


def error_view(ctx: RequestContext, outcome: Outcome) -> dict[str, Any]:
    """The view of a request's error: the API's error body (raised, or a backend's 4xx passed
    on) and its Retry-After."""
    error = outcome.error
    if error is not None:
        return view(orjson.loads(error.body(ctx.request_id)),
                    error.response_headers().get("retry-after"))
    reply = ctx.reply
    body: dict[str, Any] = {}
    if reply is not None and reply.stream is None:
        try:
            parsed = orjson.loads(reply.body)
            body = parsed if isinstance(parsed, dict) else {}
        except orjson.JSONDecodeError:
            pass
    body.setdefault("request_id", ctx.request_id)
    return view(body, reply.headers.get("retry-after") if reply is not None else None)


class ChatPipeline(Pipeline):
    """The pipeline of ``POST /chat/send``: the answer streams from a task of its own."""

    def __init__(self, stages: Sequence[Stage], conversations: Conversations,
                 generations: Generations,
                 resets: Callable[[RequestContext], Any] | None = None) -> None:
        super().__init__(stages)
        self.conversations = conversations
        self.generations = generations
        self.resets = resets  # when the caller's exhausted limits reset (the account page's)

    async def handle(self, ctx: RequestContext, refuse: GatehouseError | None = None, *,
                     defer: bool = False) -> Reply:
        # never deferred: a refusal's page view is made by the chat stage's exit
        reply = await super().handle(ctx, refuse)
        turn: Turn | None = ctx.notes.get("chat")
        if reply.stream is None or turn is None:
            return await self._refused(ctx, reply)
        gen = turn.generation
        self.generations.live[gen.message_id] = gen
        gen.task = asyncio.ensure_future(self._consume(gen, reply.stream))
        meta = {"conversation": turn.conversation.id, "title": turn.conversation.title,
                "message": gen.message_id, "request_id": ctx.request_id,
                "user_message": turn.user_message.id if turn.user_message else None}
        return Reply(200, dict(SSE), stream=_opened(event("meta", meta), gen.follow()))

    async def _refused(self, ctx: RequestContext, reply: Reply) -> Reply:
        """An error answer, with the page's view beside the API's body."""
        if reply.status < 400:
            return reply
        shown = ctx.notes.get("chat_view") or error_view(ctx, Outcome("error", reply.status))
        if shown.get("code") in ("insufficient_quota", "rate_limit_exceeded") \
                and self.resets is not None:
            shown["resets_at"] = await self.resets(ctx) or shown.get("resets_at")
        try:
            body = orjson.loads(reply.body) if reply.body.startswith(b"{") else {}
        except orjson.JSONDecodeError:
            body = {}
        body.setdefault("request_id", ctx.request_id)
        body["view"] = shown
        headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-type"}
        headers.update({"content-type": "application/json", "cache-control": "no-store"})
        return Reply(reply.status, headers, orjson.dumps(body))

    async def _consume(self, gen: Generation, stream: ByteStream) -> None:
        reader = SSEReader()
        saved_at = time.monotonic()
        try:
            async for chunk in stream:  # the pipeline's guarded stream: its end runs the exits
                for data in reader.feed(chunk):
                    apply(gen, data)
                if not gen.done and time.monotonic() - saved_at >= SAVE_EVERY:
                    saved_at = time.monotonic()
                    try:
                        await self.conversations.save(gen.message_id, gen.text, "streaming")
                    except Exception:
                        log.exception("saving answer %s failed", gen.message_id)
        except asyncio.CancelledError:
            pass  # stopped (or shut down): the exits have saved it
        except Exception:
            log.exception("reading answer %s failed", gen.message_id)
        finally:
            await stream.aclose()
            if not gen.done:  # the exits did not run (a bug): do not leave followers waiting
                gen.finish("incomplete", None)
            self.generations.live.pop(gen.message_id, None)


async def _opened(first: bytes, rest: AsyncGenerator[bytes, None]
                  ) -> AsyncGenerator[bytes, None]:
    yield first
    try:
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
