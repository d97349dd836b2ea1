"""Which backend holds a stored response, so any replica sends what follows to it.

A Responses backend keeps the responses it answered (``store``, on by default); a follow-up
(``previous_response_id``), ``GET``/``DELETE /v1/responses/{id}`` and its ``input_items`` only
work on that backend. The upstream stage records ``response id → (backend, model, org)`` in the
state layer (memory, or Redis shared by every replica) when such a response is made, and
:class:`StoredResponseStage` routes the calls about it. Another org's response is answered as
an unknown one.

A chat-only backend keeps nothing, so for its translated responses the gateway keeps the
response and its conversation itself (``backend`` None, up to ``MAX_KEPT_BYTES``): a follow-up
is sent with the conversation as input, and GET, DELETE and ``input_items`` are answered here."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gatehouse.context import Outcome, Reply, RequestContext
from gatehouse.errors import InvalidRequest, NotFound, UpstreamUnavailable
from gatehouse.pipeline import Answered
from gatehouse.state.base import State, StateError
from gatehouse.upstream.responses_bridge import input_items
from gatehouse.upstream.router import Router

log = logging.getLogger("gatehouse.upstream")

KEEP_SECONDS = 30 * 86400  # OpenAI keeps stored responses 30 days
PIN_NOTE = "upstream.pin"  # the backend a call must go to (no failover elsewhere)
PATH_NOTE = "upstream.path"  # the backend path of a call about a stored response
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_QUERY = re.compile(r"^[A-Za-z0-9_.=&%\[\]-]{0,1000}$")
PREFIX = "/v1/responses/"
HISTORY_NOTE = "upstream.history"  # the kept conversation a follow-up continues
MAX_KEPT_BYTES = 1 << 20  # a translated response and its conversation, kept by the gateway


@dataclass(frozen=True, slots=True)
class Held:
    backend: str | None  # None: kept by the gateway (a chat-only backend's response)
    model: str
    org: str | None
    response: dict[str, Any] | None = None
    items: list[Any] | None = None  # every input item of its conversation


class Affinity:
    def __init__(self, state: State, keep: float = KEEP_SECONDS) -> None:
        self.state = state
        self.seconds = keep

    async def remember(self, response_id: str, backend: str, model: str,
                       org: str | None) -> None:
        value = orjson.dumps({"backend": backend, "model": model, "org": org})
        try:
            await self.state.put("resp:" + response_id, value, self.seconds)
        except StateError as exc:  # the answer stands; follow-ups may go elsewhere
            log.warning("could not record where response %s is stored (%s)", response_id, exc)

    async def keep(self, response: dict[str, Any], items: list[Any], model: str,
                   org: str | None) -> bool:
        """Keep a translated response and its conversation; False when too large."""
        value = orjson.dumps({"backend": None, "model": model, "org": org,
                              "response": response, "items": items})
        if len(value) > MAX_KEPT_BYTES:
            log.warning("response %s not kept: %d bytes", response["id"], len(value))
            return False
        try:
            await self.state.put("resp:" + response["id"], value, self.seconds)
        except StateError as exc:
            log.warning("could not keep response %s (%s)", response["id"], exc)
            return False
        return True

    async def find(self, response_id: str) -> Held | None:
        try:
            raw = await self.state.get("resp:" + response_id)
        except StateError as exc:
            raise UpstreamUnavailable("Where this response is stored cannot be looked up right "
                                      "now. Try again in a few seconds.", retry_after=2.0,
                                      cause=f"state layer: {exc}") from None
        if raw is None:
            return None
        data: dict[str, Any] = orjson.loads(raw)
        return Held(data["backend"], data["model"], data.get("org"), data.get("response"),
                    data.get("items"))

    async def forget(self, response_id: str) -> None:
        try:
            await self.state.delete("resp:" + response_id)
        except StateError as exc:
            log.warning("could not forget response %s (%s)", response_id, exc)


def stored_methods(path: str) -> tuple[str, ...]:
    """What a path under /v1/responses/ answers: its input items are only read."""
    return ("GET",) if path.endswith("/input_items") else ("GET", "DELETE")


def org_of(ctx: RequestContext) -> str | None:
    return getattr(ctx.principal, "org_id", None)


def gone(response_id: str, held: Held, param: str | None) -> InvalidRequest:
    return InvalidRequest(
        f"The response '{response_id}' is stored on backend '{held.backend}', which no longer "
        f"serves model '{held.model}' here, so it cannot be read or continued. Start a new "
        "response with the whole conversation as input.", param=param,
        code="response_backend_gone")


async def pin_follow_up(ctx: RequestContext, affinity: Affinity, router: Router) -> None:
    """``previous_response_id``: send the request to the backend holding that response."""
    previous = (ctx.body or {}).get("previous_response_id")
    if not isinstance(previous, str) or not previous:
        return
    held = await affinity.find(previous)
    targets = router.routes[ctx.model or ""].targets
    unknown = NotFound(f"Previous response with id '{previous}' not found.",
                       param="previous_response_id", code="previous_response_not_found")
    if held is None:
        if not any(t.api == "responses" for t in targets):
            raise unknown  # chat-only backends keep nothing: only the gateway could have
        return  # not made through this gateway (or forgotten): the backend says what it knows
    if held.org != org_of(ctx):  # the backend knows no orgs: never let another continue it
        raise unknown
    if held.backend is None:  # kept here: any backend continues it with the conversation
        ctx.notes[HISTORY_NOTE] = (held.items or []) + (held.response or {}).get("output", [])
        return
    if not any(t.backend.name == held.backend for t in targets):
        raise gone(previous, held, "previous_response_id")
    ctx.notes[PIN_NOTE] = held.backend


def continued(ctx: RequestContext) -> dict[str, Any]:
    """The request as the model reads it: with the conversation the gateway kept put before
    its input when it follows up on a response kept here (``pin_follow_up``)."""
    body = ctx.body or {}
    history = ctx.notes.get(HISTORY_NOTE)
    if history is None:
        return body
    return {**body, "input": history + input_items(body), "previous_response_id": None}


class FollowUpStage:
    """``POST /v1/responses`` with a ``previous_response_id``: the response it continues is
    found before the quota stage — so the reservation counts the kept conversation the model
    will read, not only the new input (a 5,000-word history reserved 15 tokens) — and the
    upstream stage sends it there (``pin_follow_up``)."""

    name = "follow_up"

    def __init__(self, affinity: Affinity, router: Router) -> None:
        self.affinity = affinity
        self.router = router

    async def enter(self, ctx: RequestContext) -> None:
        if ctx.endpoint == "responses":
            await pin_follow_up(ctx, self.affinity, self.router)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None


class StoredResponseStage:
    """``GET``/``DELETE /v1/responses/{id}`` and ``GET …/{id}/input_items``: found in the
    affinity record, then passed to the upstream stage pinned to the backend holding it."""

    name = "stored_response"

    def __init__(self, affinity: Affinity, router: Router) -> None:
        self.affinity = affinity
        self.router = router

    async def enter(self, ctx: RequestContext) -> None:
        rest = ctx.path[len(PREFIX):]
        response_id, _, tail = rest.partition("/")
        if tail not in ("", "input_items"):
            raise NotFound(f"Unknown request URL: {ctx.method} {ctx.path}. Stored responses "
                           "are GET or DELETE /v1/responses/{id} and GET "
                           "/v1/responses/{id}/input_items.", code="unknown_url")
        if not _ID.match(response_id):
            raise InvalidRequest("Invalid response id: expected 1–200 letters, digits or "
                                 "'_.:-' (e.g. resp_…).", param="response_id")
        held = await self.affinity.find(response_id)
        if held is None or held.org != org_of(ctx):
            # (translated responses are kept too: the message once said they were not)
            raise NotFound(f"No response with id '{response_id}' is stored through this "
                           "gateway for your organization: one made with store: false or "
                           "by the demo model is not kept, and a kept one is gone once "
                           "deleted or expired.",
                           param="response_id", code="response_not_found")
        if held.backend is None:
            raise Answered(await self._kept(ctx, response_id, held, tail))
        route = self.router.routes.get(held.model)
        if route is None or not any(t.backend.name == held.backend for t in route.targets):
            raise gone(response_id, held, "response_id")
        ctx.model = held.model
        ctx.body = {}
        ctx.notes[PIN_NOTE] = held.backend
        query = ctx.query.decode("latin-1")
        if not _QUERY.match(query):
            raise InvalidRequest("Invalid query string: send only the documented parameters "
                                 "(after, limit, order, include[]), URL-encoded.",
                                 param="query")
        ctx.notes[PATH_NOTE] = f"/responses/{response_id}" + (f"/{tail}" if tail else "") \
            + (f"?{query}" if query else "")
        ctx.notes["stored.id"] = response_id

    async def _kept(self, ctx: RequestContext, response_id: str, held: Held, tail: str
                    ) -> Reply:
        """A response the gateway keeps, answered here (GET, input_items, DELETE)."""
        answer: Any = held.response
        if ctx.method == "DELETE":
            await self.affinity.forget(response_id)
            answer = {"id": response_id, "object": "response", "deleted": True}
        elif tail:
            data = [{"id": f"item_{response_id[5:]}_{i}", **item} if isinstance(item, dict)
                    else item for i, item in enumerate(held.items or [])]
            answer = {"object": "list", "data": data, "has_more": False,
                      "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None}
        return Reply(200, {"content-type": "application/json"}, orjson.dumps(answer))

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        if ctx.method == "DELETE" and outcome.kind == "ok" and outcome.status == 200:
            await self.affinity.forget(ctx.notes.pop("stored.id"))
