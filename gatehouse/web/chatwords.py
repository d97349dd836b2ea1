"""What the chat page says about a failure — in one place, worked out from the very error
body the API sends (OpenAI's ``{"error": {type, code, message}}`` plus ``request_id`` and,
from the edge, ``ray_id``) and its Retry-After.

A view is a small JSON object the page shows as it is (gatehouse/static/chat.js words
nothing itself): ``title``, ``message`` (the API's own), ``next`` (what to do), ``action``
(the button it offers: retry, sign_in, new_chat, reload), ``retry_after`` (seconds),
``resets_at`` (Unix seconds: the page prints it in the browser's time zone), ``status_link``,
``request_id`` and ``ray_id``."""

from __future__ import annotations

import time
from typing import Any

from gatehouse.errors import ALL_ERRORS

KEPT = "Your message is kept; retry. If it keeps failing, see the status page."
# code → (title, what to do, the button). ``{wait}`` is the real Retry-After in seconds.
WORDS: dict[str, tuple[str, str, str | None]] = {
    "at_capacity": ("At capacity right now",
                    "Try again in {wait} s; Plus and Pro are served first.", "retry"),
    "rate_limit_exceeded": ("You've reached your limit",
                            "It resets at {resets}. Your account page shows each limit.", None),
    "insufficient_quota": ("You've reached your limit",
                           "It resets at {resets}. Your account page shows each limit.", None),
    "session_expired": ("Your session has expired",
                        "Sign in again: what you typed is kept and will be here afterwards.",
                        "sign_in"),
    "1020": ("Access denied",
             ("This may not be your fault (shared networks and VPNs get blocked too): try "
              "another network, or contact support and quote the Ray ID."), None),
    "challenge_required": ("Checking your browser…",
                           "The page reloads to pass a short check, then you are back here.",
                           "reload"),
    "upstream_error": ("Something went wrong on our side", KEPT, "retry"),
    "upstream_unavailable": ("Something went wrong on our side", KEPT, "retry"),
    "upstream_timeout": ("The model took too long", KEPT, "retry"),
    "internal_error": ("Something went wrong on our side", KEPT, "retry"),
    "identity_unavailable": ("Something went wrong on our side", KEPT, "retry"),
    "conflict": ("This conversation changed in another tab", "Reload it, then send again.",
                 "reload"),
    "stream_broken": ("The answer broke off",
                      "The text above is incomplete. Retry to get a whole answer.", "retry"),
    "context_length_exceeded": ("This conversation is too long for the model",
                                ("Start a new conversation (you can paste what matters "
                                 "into it)."), "new_chat"),
    "model_not_found": ("That model is not available to you",
                        "Pick another model from the list.", None),
    "csrf_failed": ("This page is out of date", "Reload the page, then send again.", "reload"),
    "request_too_large": ("The message is too long", "Shorten it and send it again.", None),
}
OURS = ("server_error", "overloaded")  # types that are the service's fault, not the person's
_BY_CODE = {cls.code: cls for cls in ALL_ERRORS}


def view(body: dict[str, Any], retry_after: str | None = None,
         now: float | None = None) -> dict[str, Any]:
    """The view of one error body (as the API answers it) and its Retry-After header."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    assert isinstance(error, dict)
    code = str(error.get("code") or "")
    kind = str(error.get("type") or "")
    wait = None
    if retry_after is not None:
        try:
            wait = max(1, int(float(retry_after)))
        except ValueError:
            wait = None
    known = _BY_CODE.get(code)
    words = WORDS.get(code)
    if words is None:
        title = known.title if known is not None else "Something went wrong"
        advice = known.advice if known is not None else (
            KEPT if kind in OURS else "Check what you sent and try again.")
        words = (title, advice, "retry" if kind in OURS else None)
    title, advice, action = words
    resets_at = (time.time() if now is None else now) + wait if wait is not None else None
    resets_at = body.get("resets_at", resets_at)  # the chat's own, when it knows the window
    return {
        "code": code, "type": kind, "title": title, "message": str(error.get("message") or ""),
        "next": advice.format(wait=wait if wait is not None else "a few",
                              resets="{resets}"),  # the page fills in its own local time
        "action": action, "retry_after": wait, "resets_at": resets_at,
        "status_link": kind in OURS or code in ("stream_broken", "upstream_timeout"),
        "request_id": body.get("request_id"), "ray_id": body.get("ray_id"),
    }
