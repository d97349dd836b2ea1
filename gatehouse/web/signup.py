"""Self sign-up at ``/signup``, when ``[web] signup = true`` (docs/web.md, "Signing up").

    sign-up ─► CSRF ─► throttle.attempt(email, address) ─► locked? ── yes ─► 429 (no hash)
                              │ no (the attempt is counted, like a sign-in's)
                              ▼
                 the form's rules (email, password as the admin API's, typed twice) ─► 400
                              ▼
          the email is new ─► hash, create the user ─┐
          the email is taken ─► check the password ──┼─► right (and enabled): signed in, 303
                                                     └─► wrong: 400 ``signup_refused``

One argon2 operation either way, and the same answer for a new account as for an existing one
whose password was typed: a taken email is never confirmed by the words or the time. A
refused one is answered like any other refused form (see the docs for what that still tells).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.errors import (
    GatehouseError,
    IdentityUnavailable,
    InvalidRequest,
    PermissionDenied,
    SignInThrottled,
)
from gatehouse.identity.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    hash_password,
    verify_password,
)
from gatehouse.store.accounts import EMAIL_MAX, EMAIL_PATTERN, AccountError
from gatehouse.store.tables import User
from gatehouse.web import csrf
from gatehouse.web.cookies import safe_next, set_cookie
from gatehouse.web.forms import read_form
from gatehouse.web.render import problem, render

if TYPE_CHECKING:
    from gatehouse.web.pages import WebPages

log = logging.getLogger("gatehouse.web.signup")

PATH = "/signup"
COOKIE = "gatehouse_signup_csrf"
REFUSED = ("An account cannot be made with this email and password. If you already have "
           "one, sign in with its password.")


def form_problem(email: str, password: str, again: str) -> InvalidRequest | None:
    """What is wrong with the form itself (the admin API's rules for a user), or None."""
    if not email or len(email) > EMAIL_MAX or not re.fullmatch(EMAIL_PATTERN, email):
        return InvalidRequest("Enter an email address, like ada@example.com.", param="email")
    if len(password) < MIN_LENGTH:
        return InvalidRequest(f"A password needs at least {MIN_LENGTH} characters.",
                              param="password")
    if len(password) > MAX_LENGTH:
        return InvalidRequest(f"A password has at most {MAX_LENGTH} characters.",
                              param="password")
    if password != again:
        return InvalidRequest("The two passwords are not the same.", param="password_again")
    return None


class SignUp:
    def __init__(self, pages: WebPages) -> None:
        self.pages = pages  # they own sessions, the throttle's words and refused forms
        self.accounts = pages.accounts
        self.throttle = pages.throttle
        self.web = pages.web

    def _page(self, request: Request, status: int = 200, **context: str | None) -> Response:
        token = csrf.login_token(request, COOKIE)
        response = render(request, "signup.html", status, csrf=token, min_length=MIN_LENGTH,
                          **context)
        set_cookie(response, COOKIE, token, path=PATH, max_age=None,
                   secure=self.pages.secure(request))
        return response

    async def form(self, request: Request) -> Response:
        return self._page(request, next=safe_next(request.query_params.get("next"), "/"),
                          email="")

    async def submit(self, request: Request) -> Response:
        form = await read_form(request)
        target = safe_next(form.get("next"), "/")
        if not csrf.matches(request.cookies.get(COOKIE), form.get("csrf")):
            return problem(request, PermissionDenied(
                "The sign-up form has expired or its security token is missing.",
                code="csrf_failed"), back=PATH,
                advice="Open the sign-up page again and submit the form from there. If this "
                       "keeps happening, allow cookies for this site.")
        email = form.get("email", "").strip().lower()
        visitor = self.pages.visitor(request)
        attempt = await self.throttle.attempt(email, self.pages.address(request, visitor))
        if not attempt.allowed:  # counted before anything is hashed or looked up
            self.pages.offense(visitor)
            locked = SignInThrottled(self.pages.locked(attempt), retry_after=attempt.wait)
            return self._refused(request, locked, target, email)
        password = form.get("password", "")
        error: GatehouseError | None = form_problem(email, password,
                                                    form.get("password_again", ""))
        user = None if error is not None else await self._account(email, password)
        if user is None:
            self.pages.offense(visitor)
            error = error or InvalidRequest(REFUSED, code="signup_refused")
            if attempt.wait:  # this attempt locked it: say so now
                error = type(error)(f"{error.message} {self.pages.locked(attempt)}",
                                    param=error.param, code=error.code,
                                    retry_after=attempt.wait)
            return self._refused(request, error, target, email)
        await self.throttle.signed_up(attempt)
        return await self.pages.start_session(request, user, target, COOKIE, PATH)

    def _refused(self, request: Request, error: GatehouseError, target: str,
                 email: str) -> Response:
        return self.pages.refused(request, error, self._page, next=target, email=email[:254])

    async def _account(self, email: str, password: str) -> User | None:
        """A new user with these credentials; for a taken email, its user when the password
        is right (and it is not disabled), else None."""
        existing = await self.accounts.user_by_email(email)
        if existing is None:
            digest = await asyncio.to_thread(hash_password, password)
            try:
                return await self.accounts.create_user(email, digest, self.web.signup_org,
                                                       self.web.signup_tier)
            except AccountError as exc:
                if exc.kind != "conflict":  # [web] signup_org names no org
                    log.error("sign-up cannot create users: %s", exc)
                    raise IdentityUnavailable("Sign-up is not available right now.",
                                              retry_after=60, cause=str(exc)) from None
            existing = await self.accounts.user_by_email(email)  # made meanwhile
            if existing is None:
                return None
        ok = await verify_password(existing.password_hash, password)
        return existing if ok and not existing.disabled else None
