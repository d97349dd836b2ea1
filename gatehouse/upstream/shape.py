"""Is a backend's successful answer what its endpoint returns?

A backend behind a misconfigured proxy answers a login page with 200, a redirect, an empty
204, or a JSON error with status 200; a backend that ignores ``stream: true`` answers JSON to
a stream request. Passed on, each reached the client as a success (an HTML page as a chat
completion, a stream of raw JSON with no ``data:`` lines), was charged, and counted as the
backend's success by its circuit breaker. Such an answer is a :class:`Malformed` failure
instead: the next backend is tried, and with none left the client gets the documented
``upstream_error`` (docs/errors.md).

Only the shape is checked — an object holding the endpoint's list (``choices``, ``data``,
``output``, ``results``) — never the contents: the client's SDK reads those.
"""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.upstream.backend import BackendFailure

# the list a whole answer of each JSON endpoint holds (the others — speech, transcriptions in
# text formats — are passed on as the backend sent them)
WHOLE_ANSWER = {"chat.completions": "choices", "completions": "choices", "embeddings": "data",
                "responses": "output", "moderations": "results", "images.generations": "data"}
# the first byte of an event stream: a field name (data, event, id, retry) or a comment
_SSE_START = frozenset(b"deir:")


class Malformed(BackendFailure):
    """The backend answered, but not with what its endpoint returns."""


def check_status(status: int) -> None:
    """A backend's status that is no answer at all: 1xx (an interim one) or 3xx (redirects
    are not followed: a backend's address that redirects is a misconfiguration)."""
    if status < 200 or 300 <= status < 400:
        raise Malformed(f"answered HTTP {status}, which is not an answer")


def check_whole(endpoint: str, status: int, content_type: str, body: bytes) -> None:
    """A successful whole answer (status 2xx) to a JSON endpoint is a JSON object holding the
    endpoint's list."""
    key = WHOLE_ANSWER.get(endpoint)
    if key is None or status >= 300:
        return
    if not body.strip():
        raise Malformed(f"answered HTTP {status} with no body")
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed(f"answered HTTP {status} with {_kind(content_type)}, not JSON") from None
    if not isinstance(data, dict):
        raise Malformed(f"answered HTTP {status} with JSON that is not an object")
    if not isinstance(data.get(key), list):
        error = data.get("error")
        if error is not None:
            said = error.get("message") if isinstance(error, dict) else error
            raise Malformed(f"answered HTTP {status} with an error: {str(said)[:200]}")
        raise Malformed(f"answered HTTP {status} with an object without '{key}'")


def check_stream_start(chunk: bytes) -> None:
    """The first bytes of a stream's answer begin an event stream — not a JSON object (a
    backend that ignored ``stream: true``) or an HTML page."""
    head = chunk.lstrip()[:1]
    if head and head[0] not in _SSE_START:
        what = "JSON" if head in (b"{", b"[") else "HTML" if head == b"<" else "text"
        raise Malformed(f"answered a stream request with {what}, not an event stream")


def _kind(content_type: str) -> str:
    return content_type.split(";")[0].strip() or "no content type"
