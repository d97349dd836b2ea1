"""Client request ids: one ``X-Client-Request-Id`` per request, the same on each of its retries.

The gateway echoes it and logs it beside its own ``x-request-id``, so a request can be found
by either id even when no answer ever came back (a timeout, a reset connection)."""

from __future__ import annotations

import uuid

import httpx

HEADER = "x-client-request-id"


def new_client_request_id() -> str:
    return str(uuid.uuid4())


def ensure_client_request_id(request: httpx.Request) -> str:
    """The request's own id if the caller set one, else a new UUID4 set on it."""
    value: str | None = request.headers.get(HEADER)
    if not value:
        value = new_client_request_id()
        request.headers[HEADER] = value
    return value
