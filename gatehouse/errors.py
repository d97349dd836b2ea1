"""Every answer the gateway makes that is not a success.

The tree (status · type · code)::

    GatehouseError
    ├── InvalidRequest          400 · invalid_request_error · invalid_json | missing_required_parameter
    │   │                                                  | invalid_type | invalid_value
    │   └── InvalidClientRequestId   400 · invalid_request_error · invalid_client_request_id
    ├── RequestTooLarge         413 · invalid_request_error · request_too_large
    ├── HeadTooLarge            431 · invalid_request_error · request_header_fields_too_large
    │   └── UriTooLong          414 · invalid_request_error · uri_too_long
    ├── RequestTimeout          408 · invalid_request_error · request_timeout  (head or body too slow)
    ├── TooManyConnections      429 · rate_limit_exceeded · too_many_connections  (per address)
    ├── ServerBusy              503 · overloaded · too_many_connections  (every connection in use)
    ├── MissingApiKey           401 · invalid_request_error · missing_api_key
    ├── InvalidApiKey           401 · invalid_request_error · invalid_api_key
    ├── SessionExpired          401 · invalid_request_error · session_expired
    ├── WrongCredentials        401 · invalid_request_error · invalid_credentials  (sign-in form)
    ├── PermissionDenied        403 · permission_error · insufficient_permissions
    │                                                  | service_tier_not_allowed | csrf_failed
    ├── AccessDenied            403 · access_denied · 1020  (the edge: a rule or a ban; Ray ID)
    ├── ChallengeRequired       403 · access_denied · challenge_required (gatehouse-mitigated: challenge)
    │   └── CookiesRequired     403 · access_denied · cookies_required   (check passed, cookie refused)
    ├── RateLimited             429 · requests | tokens · rate_limit_exceeded
    ├── SignInThrottled         429 · invalid_request_error · too_many_sign_ins (Retry-After)
    ├── QuotaExceeded           429 · insufficient_quota · insufficient_quota  (x-should-retry: false)
    ├── RouteNotFound           404 · invalid_request_error · unknown_url
    │   └── UnsupportedEndpoint 404 · invalid_request_error · unsupported_endpoint (an OpenAI
    │                                                 endpoint this gateway does not serve)
    ├── MethodNotAllowed        405 · invalid_request_error · method_not_allowed
    ├── ModelNotFound           404 · invalid_request_error · model_not_found
    ├── NotFound                404 · invalid_request_error · not_found   (admin API: no such org, key, …)
    ├── Conflict                409 · invalid_request_error · conflict    (admin API: already exists)
    ├── ClientClosedRequest     499 · client_error · client_disconnected  (log only: nobody to tell)
    ├── UpstreamFailed          500 · server_error · upstream_error      (5xx after failover)
    ├── UpstreamUnavailable     503 · server_error · upstream_unavailable
    │   └── CallerHeldBack      503 · server_error · upstream_unavailable (only this caller's
    │                                                 calls: its last ones all failed)
    ├── UpstreamTimeout         504 · server_error · upstream_timeout
    ├── AtCapacity              503 · overloaded · at_capacity (Retry-After)
    ├── QuotaUnavailable        503 · server_error · quota_unavailable (limiter down, fail_closed)
    ├── IdentityUnavailable     503 · server_error · identity_unavailable (store down, key not cached)
    └── InternalError           500 · server_error · internal_error      (a gateway bug)

Each error keeps a public ``message`` (safe to show anyone) apart from a private ``cause``
(for the log only), and renders one way for API clients (OpenAI's error body, so the official
SDK raises the matching class) and one way for browsers (an HTML page with the request id and
what to do next, rendered by :mod:`gatehouse.htmlpage`). docs/errors.md lists them all.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import orjson


def whole_seconds(seconds: float) -> int:
    """``Retry-After`` in whole seconds, at least 1 — what every message and page says too."""
    return max(1, math.ceil(seconds))


def roughly(seconds: float) -> str:
    """A wait as a person reads it: "45 seconds", "about 3 minutes", "about 12 hours"."""
    if seconds < 90:
        n = whole_seconds(seconds)
        return f"{n} second{'s' if n != 1 else ''}"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * size or unit == "minute":
            n = round(seconds / size)
            return f"about {n} {unit}{'s' if n != 1 else ''}"
    return f"{round(seconds)} seconds"  # not reached


class GatehouseError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Something went wrong"
    template: ClassVar[str] = "problem.html"  # the browser page (gatehouse/htmlpage.py)
    advice: ClassVar[str] = "Try again in a moment. If it keeps happening, contact support with the request ID."

    def __init__(self, message: str, *, param: str | None = None, cause: str | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.cause = cause
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code  # type: ignore[misc]

    def body(self, request_id: str | None) -> bytes:
        payload: dict[str, Any] = {"error": {"message": self.message, "type": self.type,
                                             "param": self.param, "code": self.code},
                                   **self.details()}
        if request_id:
            payload["request_id"] = request_id
        return orjson.dumps(payload)

    def details(self) -> dict[str, Any]:
        """Fields beside ``error`` in the JSON body (and on the page), e.g. ``ray_id``."""
        return {}

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["retry-after"] = str(whole_seconds(self.retry_after))
            headers["retry-after-ms"] = str(max(0, round(self.retry_after * 1000)))
        return headers


class InvalidRequest(GatehouseError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"
    title = "The request is not valid"
    advice = "Fix the request as the message says and send it again; retrying it unchanged will fail the same way."


class InvalidClientRequestId(InvalidRequest):
    code = "invalid_client_request_id"


def unstorable(exc: BaseException) -> InvalidRequest:
    """A value the store refused for what it is (``store.db.refused_value``): the request's
    fault, never the store being down — the one answer of the admin API, the pages and the
    chat."""
    return InvalidRequest("The request holds a value that cannot be stored, such as a NUL "
                          "character.", cause=repr(exc))


class RequestTooLarge(GatehouseError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    title = "The request is too large"
    advice = "Shorten the input (fewer or smaller messages) and send it again."


class NotHttp(InvalidRequest):
    """Bytes the HTTP parser refuses (a Content-Length twice or negative, Transfer-Encoding
    beside Content-Length, a NUL or a bare CR in a header, an unknown method): answered by the
    connection layer (gatehouse/edge/protocol.py), which then closes the connection."""

    code = "invalid_http"
    title = "The request is not valid HTTP"
    advice = ("The client sent bytes that are not a valid HTTP/1.1 request. Use an HTTP "
              "library instead of hand-made requests; check any proxy in between.")


class UpgradeNotServed(InvalidRequest):
    """A request asking to switch protocols (``Upgrade: h2c``, ``websocket``) that carries a
    body: the parser stops at an upgrade's head, so the body cannot be read as HTTP. Answered
    by the connection layer, which then closes the connection. (Without a body, an upgrade
    request is answered as the plain HTTP request it also is.)"""

    code = "upgrade_not_supported"
    title = "Protocol upgrades are not served"
    advice = ("Send the request without the Upgrade and Connection: upgrade headers (this "
              "gateway speaks HTTP/1.1; for HTTP/2 use TLS with ALPN through a proxy in front).")


class HeadTooLarge(GatehouseError):
    """Answered by the connection layer (gatehouse/edge/protocol.py) before any stage runs."""

    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"
    title = "The request headers are too large"
    advice = "Send fewer or smaller headers (large cookies are the usual cause: clear this site's cookies)."


class UriTooLong(HeadTooLarge):
    status = 414
    code = "uri_too_long"
    title = "The address is too long"
    advice = "Shorten the URL: put large parameters in the request body instead of the query string."


class RequestTimeout(GatehouseError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    title = "The request arrived too slowly"
    advice = "Send the whole request without long pauses; check your network. Retrying is safe."


class TooManyConnections(GatehouseError):
    status = 429
    type = "rate_limit_exceeded"
    code = "too_many_connections"
    title = "Too many connections"
    advice = "Your address has too many connections open at once: reuse connections (keep-alive) or lower your client's pool size, then retry."


class ServerBusy(GatehouseError):
    status = 503
    type = "overloaded"
    code = "too_many_connections"
    title = "The service is very busy"
    advice = "Every connection the server can hold is in use. Retry after the time in Retry-After."


class MissingApiKey(GatehouseError):
    status = 401
    type = "invalid_request_error"
    code = "missing_api_key"
    title = "Sign-in needed"
    advice = "Send your API key in an Authorization header (Authorization: Bearer YOUR_KEY). Your administrator issues keys."


class InvalidApiKey(GatehouseError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    title = "The API key is not valid"
    advice = "Check that the whole key was copied. A revoked or expired key stops working for good: ask your administrator for a new one."


class SessionExpired(GatehouseError):
    status = 401
    type = "invalid_request_error"
    code = "session_expired"
    title = "Your session has expired"
    advice = "Sign in again. Sessions end after a period without activity and after a maximum lifetime."


class WrongCredentials(GatehouseError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_credentials"
    title = "Sign-in failed"
    advice = "Check the email and password and try again."


class PermissionDenied(GatehouseError):
    status = 403
    type = "permission_error"
    code = "insufficient_permissions"
    title = "Not allowed"
    advice = "Your key or account is valid but may not do this. Use a key with the right scope, or ask your administrator."


class ChallengeRequired(GatehouseError):
    """The edge's human check: the web path asks a browser to solve a proof of work first.
    Browsers get the check itself; this error is what programs and failed checks see."""

    status = 403
    type = "access_denied"
    code = "challenge_required"
    title = "Checking your browser"
    advice = ("Open this address in a web browser with JavaScript and cookies allowed: it "
              "passes a short automatic check once and then keeps going. Programs should use "
              "an API key, which is never checked this way. If this keeps happening, contact "
              "support with the Ray ID.")

    def __init__(self, message: str, *, ray_id: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.ray_id = ray_id
        # lets scripts tell a challenge from an error (Cloudflare's cf-mitigated does the same)
        self.headers.update({"gatehouse-mitigated": "challenge", "gatehouse-ray": ray_id})

    def details(self) -> dict[str, Any]:
        return {"ray_id": self.ray_id}


class CookiesRequired(ChallengeRequired):
    code = "cookies_required"
    title = "Cookies are blocked for this site"
    advice = ("Allow cookies for this site (the check keeps its result in one cookie), then try "
              "again. If you cannot, contact support with the Ray ID.")


class AccessDenied(GatehouseError):
    """The edge refused the request (a firewall rule or a ban). Carries a Ray ID — in the
    ``gatehouse-ray`` header, the body's ``ray_id`` and the page — that support can look up;
    the rule and reason stay in the private ``cause``."""

    status = 403
    type = "access_denied"
    code = "1020"
    title = "Access denied"
    template = "denied.html"
    advice = ("This may not be your fault: shared networks, VPNs and proxies sometimes carry "
              "traffic that was blocked. Try from another network (for example, switch off the "
              "VPN or use mobile data). If it keeps happening, contact support and quote the "
              "Ray ID below.")

    def __init__(self, message: str, *, ray_id: str, client_ip: object | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.ray_id = ray_id
        # shown on the page: support needs it, the visitor may not know it; an address object
        # is turned into text only if a page is rendered (str() of one is not free)
        self.client_ip = client_ip
        self.headers["gatehouse-ray"] = ray_id

    def details(self) -> dict[str, Any]:
        return {"ray_id": self.ray_id}


class RateLimited(GatehouseError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    title = "Too many requests"
    advice = "Slow down: wait for the time in Retry-After, then try again. Your limits and when they reset are in the x-ratelimit-* headers and at GET /v1/usage."

    def __init__(self, message: str, *, unit: str = "requests", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.type = unit  # type: ignore[misc]  # OpenAI: "requests" or "tokens"


class SignInThrottled(GatehouseError):
    status = 429
    type = "invalid_request_error"
    code = "too_many_sign_ins"
    title = "Too many failed sign-ins"
    advice = "Wait until the time given, then sign in again. If you have forgotten your password, ask your administrator to set a new one."


class QuotaExceeded(GatehouseError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    title = "Usage budget used up"
    advice = "Your daily or monthly budget is spent; retrying will not help until it resets (see GET /v1/usage) or your administrator raises it."


class AtCapacity(GatehouseError):
    status = 503
    type = "overloaded"
    code = "at_capacity"
    title = "At capacity right now"
    advice = "The model is busy serving others. Nothing is wrong with your request: try again in the time Retry-After gives."


class QuotaUnavailable(GatehouseError):
    status = 503
    type = "server_error"
    code = "quota_unavailable"
    title = "Usage limits cannot be checked"
    advice = "This is on our side, not yours. Retry after the time in Retry-After; check the status page."


class RouteNotFound(GatehouseError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_url"
    title = "Page not found"
    advice = "Check the address. API paths start with /v1/, e.g. /v1/chat/completions."


class UnsupportedEndpoint(RouteNotFound):
    code = "unsupported_endpoint"
    title = "Not served by this gateway"
    advice = "Use one of the endpoints the message lists, or call this one at its provider."


class MethodNotAllowed(GatehouseError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    title = "Method not allowed"
    advice = "Use the HTTP method the API reference gives for this path."


class ModelNotFound(GatehouseError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    title = "No such model"
    advice = "List the models you can use with GET /v1/models and pick one of them."


class NotFound(GatehouseError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    title = "Not found"
    advice = "Check the name or id; list what exists with the matching GET endpoint."


class Conflict(GatehouseError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"
    title = "Already exists"
    advice = "Pick another name, or use the one that exists."


class ClientClosedRequest(GatehouseError):
    status = 499
    type = "client_error"
    code = "client_disconnected"
    title = "The client went away"
    advice = "Nothing to do: the connection closed before the request was complete."


class UpstreamFailed(GatehouseError):
    status = 500
    type = "server_error"
    code = "upstream_error"
    title = "The model failed to answer"
    advice = "This is on our side, not yours. Retry with backoff; if it persists, check the status page and contact support with the request ID."


class UpstreamUnavailable(GatehouseError):
    status = 503
    type = "server_error"
    code = "upstream_unavailable"
    title = "The model is unavailable"
    advice = "This is on our side, not yours. Retry after the time in Retry-After; check the status page for an incident."


class CallerHeldBack(UpstreamUnavailable):
    """Only this caller's calls are held back from the model's backends: its last calls all
    failed while nobody's succeeded (gatehouse/upstream/breaker.py, rule 3)."""

    title = "Your requests to this model keep failing"
    advice = "Look at the error your previous requests got: if they failed because of what they asked for (a feature this model's server does not support, say), change the request. Otherwise retry after the time in Retry-After."


class UpstreamTimeout(GatehouseError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"
    title = "The model took too long"
    advice = "This is on our side, not yours. Retry, perhaps with a smaller max_tokens or with stream=true to see output as it is made."


class IdentityUnavailable(GatehouseError):
    status = 503
    type = "server_error"
    code = "identity_unavailable"
    title = "Sign-in is unavailable"
    advice = "This is on our side, not yours: the account store cannot be reached. Retry after the time in Retry-After; check the status page."


class InternalError(GatehouseError):
    status = 500
    type = "server_error"
    code = "internal_error"
    title = "Internal error"
    advice = "This is a bug on our side. Retry once; if it persists, contact support with the request ID."


ALL_ERRORS: tuple[type[GatehouseError], ...] = (
    InvalidRequest, InvalidClientRequestId, RequestTooLarge, HeadTooLarge, UriTooLong,
    RequestTimeout, TooManyConnections, ServerBusy, MissingApiKey, InvalidApiKey,
    SessionExpired, WrongCredentials, PermissionDenied, AccessDenied, ChallengeRequired,
    CookiesRequired,
    RateLimited, QuotaExceeded,
    QuotaUnavailable, AtCapacity, IdentityUnavailable, RouteNotFound, UnsupportedEndpoint,
    MethodNotAllowed, ModelNotFound, NotFound, Conflict, ClientClosedRequest, UpstreamFailed, UpstreamUnavailable, UpstreamTimeout,
    InternalError,
)
