"""The chat's pages and its JSON endpoints (beside sign-in; docs/web.md).

``/`` is the chat (signed out: the sign-in page, which comes back here), ``/c/{id}`` one
conversation. The page's script talks to ``/chat/…`` with the session cookie, and sends the
session's CSRF token in ``x-csrf-token`` on every change; answers are made by ``POST
/chat/send``, the pipeline of ``/v1/chat/completions`` (gatehouse/web/chatstage.py), never here.
Another user's conversation or message is the same 404 as one that does not exist.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gatehouse.config import Settings
from gatehouse.errors import (
    GatehouseError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RequestTooLarge,
    SessionExpired,
)
from gatehouse.htmlpage import STYLE, page, page_headers, source_hash
from gatehouse.identity.principal import Principal
from gatehouse.identity.service import IdentityService
from gatehouse.identity.sessions import WebSession
from gatehouse.identity.stage import ENDED, EXPIRED
from gatehouse.schema.stage import parse_json
from gatehouse.store.conversations import TITLE_MAX, Conversations
from gatehouse.store.tables import ChatMessage, Conversation, User
from gatehouse.web.chatstage import allowed_models
from gatehouse.web.chatwords import view
from gatehouse.web.cookies import clear_cookie, login_url, this_page, wants_secure
from gatehouse.web.generation import Generations, follow_stored
from gatehouse.web.render import request_id

STATIC = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}
CHAT_HEADERS = page_headers(script_src="'self'", style_src=f"{source_hash(STYLE)} 'self'",
                            connect_src="'self'", img_src="'self'")
JSON_BODY_MAX = 4096

Limits = Callable[[Principal], Awaitable[list[dict[str, Any]]]]


def _static(name: str) -> bytes:
    return resources.files("gatehouse").joinpath("static", name).read_bytes()


class ChatApp:
    def __init__(self, identity: IdentityService, settings: Settings,
                 conversations: Conversations, generations: Generations,
                 served: Callable[[], Sequence[str]], limits: Limits | None = None) -> None:
        self.accounts = identity.accounts
        self.sessions = identity.sessions
        self.identity = settings.identity
        self.settings = settings
        self.conversations = conversations
        self.generations = generations
        self.served = served
        self.limits = limits
        self.files = {name: _static(name) for name in STATIC}

    # -- who is asking -------------------------------------------------------------------
    async def _signed_in(self, request: Request) -> tuple[WebSession, User] | None:
        presented = request.cookies.get(self.identity.session_cookie)
        if not presented:
            return None
        session = await self.sessions.load(presented)
        user = await self.accounts.user(session.user_id) if session else None
        if session is None or user is None or user.disabled:
            return None
        return session, user

    async def _caller(self, request: Request) -> tuple[WebSession, User]:
        """The JSON endpoints' caller, or a 401 (403 without the CSRF header on a change)."""
        found = await self._signed_in(request)
        if found is None:
            presented = request.cookies.get(self.identity.session_cookie) or ""
            why = await self.sessions.ended_why(presented) if presented else None
            raise SessionExpired(ENDED.get(why or "", EXPIRED))
        session, _ = found
        if request.method not in ("GET", "HEAD"):
            token = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                raise PermissionDenied("Missing or wrong x-csrf-token header for a request "
                                       "signed in with a session cookie.", code="csrf_failed")
        return found

    # -- pages -----------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        return await self._page(request, None)

    async def conversation_page(self, request: Request) -> Response:
        return await self._page(request, request.path_params["cid"])

    async def _page(self, request: Request, cid: str | None) -> Response:
        found = await self._signed_in(request)
        if found is None:
            here = this_page(request)
            presented = request.cookies.get(self.identity.session_cookie)
            response = Response(status_code=303, headers={"location": login_url(next=here)})
            if presented:
                response.headers["location"] = login_url(reason="session_expired", next=here)
                clear_cookie(response, self.identity.session_cookie, path="/",
                             secure=wants_secure(request, self.identity.cookie_secure))
            return response
        session, user = found
        if cid is not None and await self.conversations.get(user.id, cid) is None:
            raise NotFound("There is no such conversation: it may have been deleted.")
        data = {"csrf": session.csrf, "conversation": cid, "email": user.email,
                "tier": user.tier, "models": allowed_models(self.settings, user.tier,
                                                            self.served()),
                "max_chars": self.settings.web.max_message_chars}
        html = page("chat.html", request_id=request_id(request), data=data, user=user)
        return HTMLResponse(html, headers=CHAT_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.files:
            raise NotFound("No such file.")
        return Response(self.files[name], media_type=STATIC[name],
                        headers={"cache-control": "public, max-age=300",
                                 "x-content-type-options": "nosniff"})

    # -- conversations -------------------------------------------------------------------
    async def list_conversations(self, request: Request) -> Response:
        _, user = await self._caller(request)
        q = request.query_params
        before = None
        if q.get("before"):
            try:
                before = float(q["before"])
            except ValueError:
                raise InvalidRequest("`before` must be a number (a conversation's updated "
                                     "time).", param="before") from None
        try:
            limit = int(q.get("limit", "30"))
        except ValueError:
            raise InvalidRequest("`limit` must be a whole number.", param="limit") from None
        rows = await self.conversations.page(user.id, find=q.get("find", "")[:200],
                                             before=before, limit=limit)
        return _json({"data": [_conversation(c) for c in rows],
                      "next": rows[-1].updated_at if len(rows) >= max(1, min(limit, 100))
                      else None})

    async def get_conversation(self, request: Request) -> Response:
        _, user = await self._caller(request)
        found = await self._own(user, request.path_params["cid"])
        stale = time.time() - self.settings.web.stale_seconds
        messages = []
        for m in await self.conversations.messages(found.id):
            live = self.generations.get(user.id, m.id)
            messages.append(_message(m, live is not None, stale))
        return _json({**_conversation(found), "messages": messages})

    async def _own(self, user: User, cid: str) -> Conversation:
        found = await self.conversations.get(user.id, cid)
        if found is None:
            raise _missing()
        return found

    async def rename(self, request: Request) -> Response:
        _, user = await self._caller(request)
        body = await _small_json(request)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise InvalidRequest("`title` must be a non-empty string.", param="title",
                                 code="invalid_type")
        if len(title) > TITLE_MAX:
            raise RequestTooLarge(f"A title has at most {TITLE_MAX} characters.",
                                  param="title")
        if not await self.conversations.rename(user.id, request.path_params["cid"],
                                               " ".join(title.split())):
            raise _missing()
        return _json({"ok": True})

    async def delete(self, request: Request) -> Response:
        _, user = await self._caller(request)
        cid = request.path_params["cid"]
        for gen in list(self.generations.live.values()):
            if gen.conversation_id == cid and gen.user_id == user.id:
                gen.stop()
        if not await self.conversations.delete(user.id, cid):
            raise _missing()
        return _json({"ok": True})

    # -- answers ---------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        """Follow an answer from an offset (``Last-Event-ID`` or ``?from=``): live from this
        replica when it is generating it, else what the store has."""
        _, user = await self._caller(request)
        mid = request.path_params["mid"]
        raw = request.headers.get("last-event-id") or request.query_params.get("from") or "0"
        try:
            start = max(0, int(raw))
        except ValueError:
            raise InvalidRequest("Last-Event-ID must be a character offset.",
                                 param="Last-Event-ID") from None
        gen = self.generations.get(user.id, mid)
        if gen is not None:
            return StreamingResponse(gen.follow(start), headers=_SSE_HEADERS)
        stored = await self.conversations.message(user.id, mid)
        if stored is None:
            raise _missing()
        # generated by another replica (or already ended): the store, at its save interval

        async def read() -> ChatMessage | None:
            return await self.conversations.message(user.id, mid)

        return StreamingResponse(follow_stored(read, self._shown, start, stored),
                                 headers=_SSE_HEADERS)

    def _shown(self, m: ChatMessage) -> tuple[str, dict[str, Any] | None]:
        shown = _message(m, False, time.time() - self.settings.web.stale_seconds)
        return shown["status"], shown["view"]

    async def stop(self, request: Request) -> Response:
        _, user = await self._caller(request)
        mid = request.path_params["mid"]
        gen = self.generations.get(user.id, mid)
        if gen is not None:
            gen.stop()
            return _json({"ok": True, "running": True})
        stored = await self.conversations.message(user.id, mid)
        if stored is None:
            raise _missing()
        if self._shown(stored)[0] != "streaming":
            return _json({"ok": True, "running": False})
        # being generated by another replica: the state layer takes the stop there
        await self.generations.stop_elsewhere(user.id, mid)
        return _json({"ok": True, "running": True})

    # -- the account page --------------------------------------------------------------------
    async def usage(self, principal_of: User) -> list[dict[str, Any]]:
        if self.limits is None:
            return []
        principal = Principal("session", principal_of.tier, "api", principal_of.org_id,
                              user_id=principal_of.id, user_email=principal_of.email)
        return await self.limits(principal)


_SSE_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff",
                "content-type": "text/event-stream"}


def _missing() -> NotFound:
    return NotFound("There is no such conversation or message.")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json",
                    headers={"cache-control": "no-store"})


async def _small_json(request: Request) -> dict[str, Any]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > JSON_BODY_MAX:
            raise RequestTooLarge(f"The body is larger than {JSON_BODY_MAX} bytes.")
    return parse_json(bytes(body), request.headers.get("content-type", ""))


def _conversation(c: Conversation) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "model": c.model, "created_at": c.created_at,
            "updated_at": c.updated_at}


def _message(m: ChatMessage, live: bool, stale_before: float) -> dict[str, Any]:
    status = m.status
    shown = orjson.loads(m.error) if m.error else None
    if status == "streaming" and not live and m.updated_at < stale_before:
        status = "incomplete"  # its replica went away mid-answer
        shown = view({"error": {"type": "server_error", "code": "stream_broken",
                                "message": "The answer stopped being generated before it "
                                           "was finished."},
                      "request_id": m.request_id})
    return {"id": m.id, "role": m.role, "content": m.content, "status": status,
            "model": m.model, "request_id": m.request_id, "view": shown,
            "created_at": m.created_at, "live": live}


async def json_error(request: Request, exc: Exception) -> Response:
    """The JSON endpoints' errors: the API's body, its headers, and the page's view."""
    assert isinstance(exc, GatehouseError)
    rid = request_id(request)
    body = orjson.loads(exc.body(rid or None))
    headers = exc.response_headers()
    body["view"] = view(body, headers.get("retry-after"))
    return Response(orjson.dumps(body), exc.status, media_type="application/json",
                    headers={**headers, "cache-control": "no-store"})


def chat_routes(chat: ChatApp) -> list[BaseRoute]:
    return [
        Route("/", chat.home, methods=["GET"]),
        Route("/c/{cid}", chat.conversation_page, methods=["GET"]),
        Route("/chat/static/{name}", chat.static, methods=["GET"]),
        Route("/chat/conversations", chat.list_conversations, methods=["GET"]),
        Route("/chat/conversations/{cid}", chat.get_conversation, methods=["GET"]),
        Route("/chat/conversations/{cid}", chat.rename, methods=["PATCH"]),
        Route("/chat/conversations/{cid}", chat.delete, methods=["DELETE"]),
        Route("/chat/messages/{mid}/events", chat.events, methods=["GET"]),
        Route("/chat/messages/{mid}/stop", chat.stop, methods=["POST"]),
    ]

