"""Sign-in, the account page and sign-out.

Every sign-in makes a new session id (a presented one is ended, never adopted), and the
session cookie is HttpOnly, SameSite=Lax, Path=/, Secure per ``[identity] cookie_secure``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gatehouse.context import prefers_html
from gatehouse.edge.visitor import OffenseSink, Visitor
from gatehouse.errors import (
    GatehouseError,
    IdentityUnavailable,
    InternalError,
    MethodNotAllowed,
    PermissionDenied,
    RouteNotFound,
    SignInThrottled,
    WrongCredentials,
    unstorable,
)
from gatehouse.identity.passwords import MAX_LENGTH as MAX_PASSWORD
from gatehouse.identity.passwords import verify_password
from gatehouse.identity.service import IdentityService
from gatehouse.identity.stage import ENDED
from gatehouse.identity.throttle import Attempt
from gatehouse.state.base import StateError
from gatehouse.store.accounts import EMAIL_MAX
from gatehouse.store.db import refused_value
from gatehouse.store.tables import User
from gatehouse.web import csrf
from gatehouse.web.chat import ChatApp, chat_routes, json_error
from gatehouse.web.cookies import (
    clear_cookie,
    login_url,
    safe_next,
    set_cookie,
    this_page,
    wants_secure,
)
from gatehouse.web.forms import read_form
from gatehouse.web.render import PageHeaders, problem, render
from gatehouse.web.signup import PATH as SIGNUP_PATH
from gatehouse.web.signup import SignUp

REASONS = {
    "session_expired": "Your session has expired — sign in again.",
    **ENDED,
    "signed_out": "You have signed out.",
    "signed_out_everywhere": "You have signed out on every device.",
}
WRONG = "Email or password is wrong."
# one wording for a locked account and a locked address: it must not tell which (or whether
# the account exists)
LOCKED = ("Too many failed sign-ins for this email address or from your network. You can try "
          "again in {wait}, at {at} UTC.")


def when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def duration(seconds: float) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = round(seconds)
    return f"{n} second{'s' if n != 1 else ''}"


def wait_words(seconds: float) -> str:
    """A wait, rounded up, in the largest unit that reads naturally: 45 seconds, 3 minutes."""
    whole = math.ceil(seconds)
    if whole < 90:
        return duration(whole)
    if whole < 90 * 60:
        return duration(60 * math.ceil(whole / 60))
    return duration(3600 * math.ceil(whole / 3600))


class WebPages:
    def __init__(self, identity: IdentityService, offenses: OffenseSink | None = None,
                 chat: ChatApp | None = None) -> None:
        self.chat = chat
        self.accounts = identity.accounts
        self.sessions = identity.sessions
        self.throttle = identity.throttle
        self.settings = identity.settings.identity
        self.web = identity.settings.web
        self.cookie = self.settings.session_cookie
        self.offenses = offenses  # failed sign-ins feed the edge's abuse detector

    def secure(self, request: Request) -> bool:
        return wants_secure(request, self.settings.cookie_secure)

    def _redirect(self, request: Request, to: str, *, clear_session: bool = False) -> Response:
        response = RedirectResponse(to, 303)
        if clear_session:
            clear_cookie(response, self.cookie, path="/", secure=self.secure(request))
        return response

    def _login_page(self, request: Request, status: int = 200, **context: str | None) -> Response:
        token = csrf.login_token(request)
        response = render(request, "login.html", status, csrf=token, signup=self.web.signup,
                          **context)
        set_cookie(response, csrf.LOGIN_COOKIE, token, path="/login", max_age=None,
                   secure=self.secure(request))
        return response

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request, notice=REASONS.get(request.query_params.get("reason", "")),
                                next=safe_next(request.query_params.get("next")), email="")

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        target = safe_next(form.get("next") or request.query_params.get("next"))
        if not csrf.matches(request.cookies.get(csrf.LOGIN_COOKIE), form.get("csrf")):
            return problem(request, PermissionDenied(
                "The sign-in form has expired or its security token is missing.",
                code="csrf_failed"), back=login_url(next=target),
                advice="Open the sign-in page again and submit the form from there. If this "
                       "keeps happening, allow cookies for this site.")
        email = form.get("email", "").strip()
        visitor = self.visitor(request)
        attempt = await self.throttle.attempt(email, self.address(request, visitor))
        if not attempt.allowed:  # neither the account nor the password is looked at
            self.offense(visitor)
            locked = SignInThrottled(self.locked(attempt), retry_after=attempt.wait)
            return self._refused(request, locked, target, email)
        user = await self._check(email, form.get("password", ""))
        if user is None:
            self.offense(visitor)
            error = WrongCredentials(WRONG)
            if attempt.wait:  # this failure locked it: say so now, not at the next try
                error = WrongCredentials(f"{WRONG} {self.locked(attempt)}",
                                         retry_after=attempt.wait)
            return self._refused(request, error, target, email)
        await self.throttle.succeeded(attempt)
        return await self.start_session(request, user, target, csrf.LOGIN_COOKIE, "/login")

    async def start_session(self, request: Request, user: User, target: str,
                            form_cookie: str, form_path: str) -> Response:
        """A new session for ``user``, its cookie, and ``303`` to ``target``; the form's
        CSRF cookie is removed."""
        presented = request.cookies.get(self.cookie)
        if presented:
            await self.sessions.end(presented)  # never adopt it: a fresh id, no fixation
        session_id, _ = await self.sessions.create(user.id)
        secure = self.secure(request)
        response = self._redirect(request, target)
        set_cookie(response, self.cookie, session_id, path="/",
                   max_age=int(self.sessions.absolute), secure=secure)
        clear_cookie(response, form_cookie, path=form_path, secure=secure)
        return response

    @staticmethod
    def visitor(request: Request) -> object:
        return request.scope.get("state", {}).get("visitor")

    @staticmethod
    def address(request: Request, visitor: object) -> str:
        # the edge's client address (behind trusted proxies); the socket peer without an edge
        if isinstance(visitor, Visitor):
            return str(visitor.ip)
        return request.client.host if request.client else ""

    def offense(self, visitor: object) -> None:
        if self.offenses is not None and isinstance(visitor, Visitor):
            self.offenses.offense(visitor, "signin_failed")

    def locked(self, attempt: Attempt) -> str:
        now = self.throttle.clock()
        at = when(now + attempt.wait)
        shape = "%H:%M:%S" if at.date() == when(now).date() else "%Y-%m-%d %H:%M:%S"
        return LOCKED.format(wait=wait_words(attempt.wait), at=at.strftime(shape))

    def _refused(self, request: Request, error: GatehouseError, target: str,
                 email: str) -> Response:
        return self.refused(request, error, self._login_page, next=target, email=email[:254])

    @staticmethod
    def refused(request: Request, error: GatehouseError, form: Callable[..., Response],
                **context: str) -> Response:
        """A refused form: shown again with the error (``form(request, status, ...)``), or
        the API's error body for a program."""
        if not prefers_html(request.headers.get("accept", "")):
            return problem(request, error)
        response = form(request, error.status, error=error.message, **context)
        response.headers.update(error.response_headers())
        return response

    async def _check(self, email: str, password: str) -> User | None:
        """The user these credentials belong to, or None; unknown, wrong and disabled all look
        the same, and all take one password check."""
        if not email or len(email) > EMAIL_MAX or len(password) > MAX_PASSWORD:
            return None
        user = await self.accounts.user_by_email(email)
        ok = await verify_password(user.password_hash if user else None, password)
        return user if ok and user is not None and not user.disabled else None

    async def account(self, request: Request) -> Response:
        here = this_page(request)
        presented = request.cookies.get(self.cookie)
        if not presented:
            return self._redirect(request, login_url(next=here))
        session = await self.sessions.load(presented)
        user = await self.accounts.user(session.user_id) if session else None
        if session is None or user is None or user.disabled:
            if session is not None:
                await self.sessions.end(presented)
            why = "account_disabled" if user is not None and user.disabled else \
                await self.sessions.ended_why(presented) or "session_expired"
            return self._redirect(request, login_url(reason=why, next=here),
                                  clear_session=True)
        limits = await self.chat.usage(user) if self.chat is not None else []
        return render(request, "account.html", user=user, csrf=session.csrf, limits=limits,
                      chat=self.chat is not None,
                      idle=duration(self.sessions.idle),
                      idle_ends=when(session.last_seen + self.sessions.idle),
                      absolute=duration(self.sessions.absolute),
                      absolute_ends=when(session.created + self.sessions.absolute))

    async def logout(self, request: Request) -> Response:
        form = await read_form(request)
        presented = request.cookies.get(self.cookie)
        session = await self.sessions.load(presented) if presented else None
        if session is None or presented is None:
            # nothing live to end; say what happened rather than "signed out"
            to = login_url(reason="session_expired") if presented else login_url()
            return self._redirect(request, to, clear_session=bool(presented))
        if not csrf.matches(session.csrf, form.get("csrf")):
            return problem(request, PermissionDenied(
                "The sign-out form is missing its security token, or it belongs to another "
                "session.", code="csrf_failed"), back="/account",
                advice="Open your account page and use the sign-out button there.")
        if form.get("everywhere") == "1":
            await self.sessions.end_all(session.user_id)
            reason = "signed_out_everywhere"
        else:
            await self.sessions.end(presented)
            reason = "signed_out"
        return self._redirect(request, login_url(reason=reason), clear_session=True)

    async def logout_get(self, request: Request) -> Response:
        return self._redirect(request, "/account")  # signing out takes the form's token


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return problem(request, MethodNotAllowed("This page does not accept that method.",
                                                 headers=dict(exc.headers or {})))
    return problem(request, RouteNotFound("There is no page at this address."), back="/account")


async def _gatehouse_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatehouseError)
    if request.url.path.startswith("/chat/"):  # the chat's JSON endpoints: the page's view too
        return await json_error(request, exc)
    return problem(request, exc)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return await _gatehouse_error(request, IdentityUnavailable(
        "Sign-in cannot reach the account store right now.", retry_after=5))


async def _store_failed(request: Request, exc: Exception) -> Response:
    if refused_value(exc):  # about what was sent (a NUL PostgreSQL cannot hold), not an outage
        return await _gatehouse_error(request, unstorable(exc))
    return await _unavailable(request, exc)


async def _bug(request: Request, exc: Exception) -> Response:
    return problem(request, InternalError("The page failed because of a bug on our side."))


# how the web path's Starlette apps answer what their routes raise: as pages (or JSON)
ERROR_HANDLERS = {HTTPException: _http_error, GatehouseError: _gatehouse_error,
                  StateError: _unavailable, SQLAlchemyError: _store_failed,
                  OSError: _unavailable, Exception: _bug}


def build_web_app(identity: IdentityService, offenses: OffenseSink | None = None,
                  chat: ChatApp | None = None) -> Starlette:
    pages = WebPages(identity, offenses, chat)
    signup = SignUp(pages)
    return Starlette(
        routes=[*(chat_routes(chat) if chat is not None else []),
                # off: /signup is not a page at all (the gateway's 404, as any unknown one)
                *([Route(SIGNUP_PATH, signup.form, methods=["GET"]),
                   Route(SIGNUP_PATH, signup.submit, methods=["POST"])]
                  if identity.settings.web.signup else []),
                Route("/login", pages.login_form, methods=["GET"]),
                Route("/login", pages.login, methods=["POST"]),
                Route("/account", pages.account, methods=["GET"]),
                Route("/logout", pages.logout, methods=["POST"]),
                Route("/logout", pages.logout_get, methods=["GET"])],
        middleware=[Middleware(PageHeaders)],
        exception_handlers=ERROR_HANDLERS,
    )
