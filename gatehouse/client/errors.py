"""What the client raises: one class per outcome, each carrying every id support asks for.

The tree::

    APIError                    status, code, type, request_id, client_request_id, ray_id,
    │                           retry_after, attempts, outcome
    ├── AuthenticationError     401
    │   └── SessionExpired      401 · session_expired
    ├── AccessDenied            403 · 1020 (a firewall rule or ban; quote ray_id)
    ├── ChallengeRequired       403 · a human check (use an API key, or a browser)
    ├── PermissionDenied        403 · anything else
    ├── InvalidRequest          other 4xx (400, 404, 409, 413, 422, …)
    ├── RateLimited             429 · rate_limit_exceeded (retry_after)
    ├── QuotaExceeded           429 · insufficient_quota
    ├── ServerError             500, 502, other 5xx
    │   ├── AtCapacity          503 · overloaded · at_capacity (retry_after)
    │   ├── UpstreamUnavailable 503 · anything else
    │   └── UpstreamTimeout     504
    ├── MalformedAnswer         below 400, but not the endpoint's answer: a proxy's HTML page,
    │                           a redirect, a blank or broken body (the message says what came)
    └── ConnectionFailed        no answer: refused, reset, DNS, TLS
        └── Timeout             no answer in time
"""

from __future__ import annotations

from typing import ClassVar

import httpx

from gatehouse.client.ids import HEADER
from gatehouse.client.outcome import Answer, Outcome
from gatehouse.client.transport import attempts_of


class APIError(Exception):
    outcome: ClassVar[Outcome | None] = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 type: str | None = None, request_id: str | None = None,
                 client_request_id: str | None = None, ray_id: str | None = None,
                 retry_after: float | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.ray_id = ray_id
        self.retry_after = retry_after
        self.attempts = attempts

    def __str__(self) -> str:
        parts = [f"{self.status} {self.code}" if self.status else None, self.message,
                 f"request id {self.request_id}" if self.request_id else None,
                 f"client request id {self.client_request_id}" if self.client_request_id else None,
                 f"Ray ID {self.ray_id}" if self.ray_id else None,
                 f"{self.attempts} attempt(s)" if self.attempts else None]
        return " · ".join(p for p in parts if p)


class AuthenticationError(APIError):
    outcome = Outcome.UNAUTHORIZED


class SessionExpired(AuthenticationError):
    pass


class AccessDenied(APIError):
    outcome = Outcome.ACCESS_DENIED


class ChallengeRequired(APIError):
    outcome = Outcome.CHALLENGE


class PermissionDenied(APIError):
    outcome = Outcome.PERMISSION_DENIED


class InvalidRequest(APIError):
    outcome = Outcome.CLIENT_ERROR


class RateLimited(APIError):
    outcome = Outcome.RATE_LIMITED


class QuotaExceeded(APIError):
    outcome = Outcome.QUOTA_EXCEEDED


class ServerError(APIError):
    outcome = Outcome.SERVER_ERROR


class AtCapacity(ServerError):
    outcome = Outcome.AT_CAPACITY


class UpstreamUnavailable(ServerError):
    outcome = Outcome.UPSTREAM_UNAVAILABLE


class UpstreamTimeout(ServerError):
    outcome = Outcome.TIMEOUT


class MalformedAnswer(APIError):
    """A status below 400 with a body that is not what the endpoint returns — never retried
    (the request may have been carried out)."""


class ConnectionFailed(APIError):
    pass


class Timeout(ConnectionFailed):
    pass


BY_OUTCOME: dict[Outcome, type[APIError]] = {
    cls.outcome: cls for cls in (AuthenticationError, AccessDenied, ChallengeRequired,
                                 PermissionDenied, InvalidRequest, RateLimited, QuotaExceeded,
                                 ServerError, AtCapacity, UpstreamUnavailable, UpstreamTimeout)
    if cls.outcome is not None
}


def from_response(response: httpx.Response) -> APIError:
    """The error for an answer with status >= 400 (its body already read)."""
    answer = Answer.read(response.status_code, response.headers, response.content)
    cls = BY_OUTCOME[answer.outcome]
    if answer.code == "session_expired":
        cls = SessionExpired
    message = answer.message or response.reason_phrase or f"HTTP {response.status_code}"
    return cls(message, status=answer.status, code=answer.code, type=answer.type,
               request_id=answer.request_id,
               client_request_id=response.request.headers.get(HEADER),
               ray_id=answer.ray_id, retry_after=answer.retry_after,
               attempts=attempts_of(response))


def from_malformed(response: httpx.Response, what: str) -> MalformedAnswer:
    """The error for an answer below 400 that is not the endpoint's (``what`` came instead)."""
    answer = Answer.read(response.status_code, response.headers, response.content)
    return MalformedAnswer(what, status=answer.status, code="malformed_answer",
                           request_id=answer.request_id,
                           client_request_id=response.request.headers.get(HEADER),
                           ray_id=answer.ray_id, attempts=attempts_of(response))


def from_transport_error(error: httpx.TransportError, request: httpx.Request) -> ConnectionFailed:
    """The error for a request that got no answer."""
    cls = Timeout if isinstance(error, httpx.TimeoutException) else ConnectionFailed
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return cls(message, client_request_id=request.headers.get(HEADER),
               attempts=attempts_of(error))
