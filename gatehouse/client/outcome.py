"""What an HTTP answer means to a client: one :class:`Outcome` per branch of the triage matrix.

:func:`classify` reads only what any OpenAI-compatible service sends (status, the error body's
``type``/``code``, ``x-should-retry``, Cloudflare's and our ``*-mitigated`` / ``*-ray``
headers), so it works against gatehouse, OpenAI itself, or a proxy's HTML page in front of
either. The retry policy and ``gatehouse doctor`` both decide on its result.

``ok`` is the status only: whether a body below 400 is the endpoint's answer (not a proxy's
login page, a redirect or a blank body) depends on the endpoint, and is judged by
:func:`gatehouse.upstream.shape.judge` — the doctor's API path and the SDK do.

=====  ==========================================================  ========================
status what the answer says                                          outcome
=====  ==========================================================  ========================
1–3xx                                                               ``ok``
401    any                                                          ``unauthorized``
403    ``gatehouse-mitigated``/``cf-mitigated: challenge``, or code  ``challenge``
       ``challenge_required`` / ``cookies_required``
403    code ``1020``, or a page saying "error code: 1020"           ``access_denied``
403    anything else (``permission_error``)                         ``permission_denied``
429    type or code ``insufficient_quota``                          ``quota_exceeded``
429    anything else                                                ``rate_limited``
503    type ``overloaded`` / code ``at_capacity`` / "overloaded"     ``at_capacity``
503    anything else                                                ``upstream_unavailable``
504    any                                                          ``timeout``
5xx    anything else                                                ``server_error``
4xx    anything else (400, 404, 409, 413, 422, …)                   ``client_error``
=====  ==========================================================  ========================
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class Outcome(StrEnum):
    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    ACCESS_DENIED = "access_denied"  # 403 · 1020: a firewall rule or a ban
    CHALLENGE = "challenge"
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    AT_CAPACITY = "at_capacity"
    SERVER_ERROR = "server_error"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    TIMEOUT = "timeout"
    CLIENT_ERROR = "client_error"


Body = bytes | str | Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of an HTTP answer a client decides on, read once."""

    status: int
    outcome: Outcome
    type: str | None = None
    code: str | None = None
    message: str | None = None
    request_id: str | None = None
    ray_id: str | None = None
    retry_after: float | None = None  # seconds, from retry-after-ms or Retry-After
    should_retry: bool | None = None  # x-should-retry, when the server sent it

    @classmethod
    def read(cls, status: int, headers: Mapping[str, str], body: Body = None) -> Answer:
        h = {k.lower(): v for k, v in headers.items()}
        payload, text = _parse(body)
        found = payload.get("error")
        error: Mapping[str, Any] = found if isinstance(found, dict) else {}
        etype, code = _str(error.get("type")), _str(error.get("code"))
        message = _str(error.get("message"))
        should = h.get("x-should-retry", "").strip().lower()
        return cls(
            status=status,
            outcome=_outcome(status, h, etype, code, message or text),
            type=etype, code=code, message=message,
            request_id=h.get("x-request-id") or _str(payload.get("request_id")),
            ray_id=h.get("gatehouse-ray") or _ray_from_cf(h.get("cf-ray"))
            or _str(payload.get("ray_id")),
            retry_after=retry_after(h),
            should_retry={"true": True, "false": False}.get(should),
        )


def classify(status: int, headers: Mapping[str, str], body: Body = None) -> Outcome:
    """The :class:`Outcome` of one answer (``body`` as bytes, text or parsed JSON)."""
    return Answer.read(status, headers, body).outcome


LONGEST_RETRY_AFTER = 86400.0  # seconds: a longer (or infinite) Retry-After is read as this


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, as the server asked: ``retry-after-ms`` first (OpenAI's finer header),
    then ``Retry-After`` as seconds or as an HTTP date. ``None`` when absent or unreadable."""
    h = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = h.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = when.timestamp() - time.time()
        if math.isnan(seconds):
            continue
        # "inf", "1e400": longer than anyone waits, not "now" — read as a day, so no retry
        # policy retries it at once
        return min(max(seconds, 0.0), LONGEST_RETRY_AFTER)
    return None


def _outcome(status: int, h: Mapping[str, str], etype: str | None, code: str | None,
             text: str) -> Outcome:
    lowered = text.lower()
    if status < 400:
        return Outcome.OK
    if status == 401:
        return Outcome.UNAUTHORIZED
    if status == 403:
        mitigated = (h.get("gatehouse-mitigated") or h.get("cf-mitigated") or "").lower()
        if mitigated == "challenge" or code in ("challenge_required", "cookies_required"):
            return Outcome.CHALLENGE
        if code == "1020" or "error code: 1020" in lowered or "error 1020" in lowered:
            return Outcome.ACCESS_DENIED
        return Outcome.PERMISSION_DENIED
    if status == 429:
        if "insufficient_quota" in (etype, code):
            return Outcome.QUOTA_EXCEEDED
        return Outcome.RATE_LIMITED
    if status == 503:
        if etype == "overloaded" or code == "at_capacity" or "overloaded" in lowered:
            return Outcome.AT_CAPACITY
        return Outcome.UPSTREAM_UNAVAILABLE
    if status == 504:
        return Outcome.TIMEOUT
    if status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.CLIENT_ERROR


def _parse(body: Body) -> tuple[Mapping[str, Any], str]:
    """The body as a JSON object (empty if it is not one) and as text (for HTML pages)."""
    if body is None:
        return {}, ""
    if isinstance(body, Mapping):
        return body, ""
    raw = body.encode() if isinstance(body, str) else body
    text = raw[:65536].decode("utf-8", "replace")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}, text
    return (parsed if isinstance(parsed, dict) else {}), text


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _ray_from_cf(value: str | None) -> str | None:
    """Cloudflare's ``cf-ray: 8a1b2c3d4e5f6789-AMS``: the Ray ID is the part before the dash."""
    return value.split("-", 1)[0] if value else None
