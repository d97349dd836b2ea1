"""CSRF for forms.

Before a session exists (the sign-in form) the token is a double-submit cookie: a random
value in an HttpOnly cookie scoped to /login, repeated in a hidden field; a cross-site page
can make the browser send the cookie but cannot read it to fill in the field. Once signed in,
forms carry the session's own token (``WebSession.csrf``).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

LOGIN_COOKIE = "gatehouse_login_csrf"


def login_token(request: Request, cookie: str = LOGIN_COOKIE) -> str:
    """The browser's pre-session token (of the sign-in form, or of the form whose ``cookie``
    holds it), or a new one (kept across reloads and tabs)."""
    current = request.cookies.get(cookie, "")
    if 32 <= len(current) <= 64 and current.replace("-", "").replace("_", "").isalnum():
        return current
    return secrets.token_urlsafe(32)


def matches(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
