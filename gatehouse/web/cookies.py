"""The cookies of the web path, written by hand so every attribute is exactly what we mean,
and the one rule for where a sign-in may send the browser next."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

DEFAULT_NEXT = "/account"


def wants_secure(request: Request, setting: bool | str) -> bool:
    """``cookie_secure``: true/false force it; "auto" follows the scheme the request came in
    on (uvicorn runs with proxy headers off, so X-Forwarded-Proto is not believed)."""
    if isinstance(setting, bool):
        return setting
    return request.url.scheme == "https"


def set_cookie(response: Response, name: str, value: str, *, path: str,
               max_age: int | None, secure: bool) -> None:
    parts = [f"{name}={value}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    parts += [f"Path={path}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    response.headers.append("set-cookie", "; ".join(parts))


def clear_cookie(response: Response, name: str, *, path: str, secure: bool) -> None:
    set_cookie(response, name, "", path=path, max_age=0, secure=secure)


def login_url(**query: str) -> str:
    return "/login?" + urlencode(query, safe="/") if query else "/login"


def this_page(request: Request) -> str:
    """The path asked for, as a ``next``: the server hands it over decoded (``/c/€``), and a
    header holds only Latin-1 — so it is encoded again, ``%`` included (``/c/100%25``), and
    the redirect after sign-in sends the browser back to the same page."""
    return quote(request.url.path)


def safe_next(value: str | None, default: str = DEFAULT_NEXT) -> str:
    """A path on this site, or ``default``: never another host (``//host``, ``/\\host``,
    ``https://…``) and nothing a header could be split with."""
    if (not value or len(value) > 512 or not value.startswith("/") or value.startswith("//")
            or "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7f for c in value)):
        return default
    return value
