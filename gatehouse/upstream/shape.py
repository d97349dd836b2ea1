"""Is a backend's successful answer what its endpoint returns?

A backend behind a misconfigured proxy answers a login page with 200, a redirect, an empty
204, or a JSON error with status 200; a backend that ignores ``stream: true`` answers JSON to
a stream request. Passed on, each reached the client as a success (an HTML page as a chat
completion, a stream of raw JSON with no ``data:`` lines), was charged, and counted as the
backend's success by its circuit breaker. Such an answer is a :class:`Malformed` failure
instead: the next backend is tried, and with none left the client gets the documented
``upstream_error`` (docs/errors.md).

Only the shape is checked — an object holding the endpoint's list (``choices``, ``data``,
``output``, ``results``) — never the contents: the client's SDK reads those. The answer is
read once, for the check and for what the gateway needs of it (:class:`Whole`: its usage, its
id): the list is validated as JSON and skipped, never built as Python objects — an
embeddings answer of 2,048 × 3,072 numbers (~125 MB) costs ~0.2 s of the event loop that
way, against ~0.8 s for each full parse (and it was parsed twice), all of which every other
request on the worker waited through.

The same rules judge the gateway's own answers where a proxy may stand in between: ``gatehouse
doctor`` (a captive portal's page is not the API answering) and the client SDK (its error says
what came back instead of ``JSONDecodeError``). This module imports nothing heavy for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from gatehouse.upstream.failures import BackendFailure

# the list a whole answer of each JSON endpoint holds (the others — speech, transcriptions in
# text formats — are passed on as the backend sent them); None: an object, no list in it
WHOLE_ANSWER: dict[str, str | None] = {
    "chat.completions": "choices", "completions": "choices", "embeddings": "data",
    "responses": "output", "moderations": "results", "images.generations": "data",
    "models": "data", "usage": None}
# the first byte of an event stream: a field name (data, event, id, retry) or a comment
_SSE_START = frozenset(b"deir:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
GLIMPSE = 120  # characters of a body shown to people


class Malformed(BackendFailure):
    """The backend answered, but not with what its endpoint returns."""


def check_status(status: int) -> None:
    """A backend's status that is no answer at all: 1xx (an interim one) or 3xx (redirects
    are not followed: a backend's address that redirects is a misconfiguration)."""
    if status < 200 or 300 <= status < 400:
        raise Malformed(f"answered HTTP {status}, which is not an answer")


_NONE = msgspec.Raw()


class Whole(msgspec.Struct):
    """What the gateway reads of a whole answer: its list kept as raw JSON (validated, not
    built), and the few fields it uses."""

    choices: msgspec.Raw = _NONE
    data: msgspec.Raw = _NONE
    output: msgspec.Raw = _NONE
    results: msgspec.Raw = _NONE
    usage: Any = None
    error: Any = None
    id: Any = None
    store: Any = None

    def holds_list(self, key: str) -> bool:
        return bytes(memoryview(getattr(self, key))[:1]) == b"["


_READ = msgspec.json.Decoder(Whole)


def check_whole(endpoint: str, status: int, content_type: str, body: bytes) -> Whole | None:
    """A successful whole answer (status 2xx) to a JSON endpoint is a JSON object holding the
    endpoint's list: what the gateway reads of it, or None (another endpoint or status)."""
    if endpoint not in WHOLE_ANSWER or status >= 300:
        return None
    key = WHOLE_ANSWER[endpoint]
    if not body or body.isspace():
        raise Malformed(f"answered HTTP {status} with no body")
    try:
        if not body.isascii():  # (the list is skipped unchecked: its text must be UTF-8 too)
            body.decode()
        whole = _READ.decode(body)
    except msgspec.ValidationError:  # valid JSON, but not an object (or a number past 64 bits)
        if body.lstrip()[:1] != b"{":
            raise Malformed(f"answered HTTP {status} with JSON that is not an object") from None
        raise Malformed(f"answered HTTP {status} with {_kind(content_type)}, not JSON") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise Malformed(f"answered HTTP {status} with {_kind(content_type)}, not JSON") from None
    if key is None or not whole.holds_list(key):
        error = whole.error
        if error is not None:
            said = error.get("message") if isinstance(error, dict) else error
            raise Malformed(f"answered HTTP {status} with an error: {str(said)[:200]}")
        if key is not None:
            raise Malformed(f"answered HTTP {status} with an object without '{key}'")
    return whole


def check_stream_start(chunk: bytes) -> None:
    """The first bytes of a stream's answer begin an event stream — not a JSON object (a
    backend that ignored ``stream: true``) or an HTML page."""
    head = chunk.lstrip()[:1]
    if head and head[0] not in _SSE_START:
        what = "JSON" if head in (b"{", b"[") else "HTML" if head == b"<" else "text"
        raise Malformed(f"answered a stream request with {what}, not an event stream")


def _kind(content_type: str) -> str:
    return content_type.split(";")[0].strip() or "no content type"


def judge(endpoint: str, status: int, headers: Mapping[str, str], body: bytes,
          more: bool = False) -> str | None:
    """For a client (the doctor, the SDK): ``None`` when an answer below 400 is what
    ``endpoint`` returns, else what came back, for a person — the rule it broke, its content
    type, where a redirect leads and a short excerpt. ``more``: ``body`` is only the start of
    the answer (a client reads a bounded amount); a JSON object is then given the benefit of
    the doubt (a long model list), anything else is not an answer."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        check_status(status)
        if more and body.lstrip()[:1] != b"{":
            what = "blank space" if not body.strip() else "something that is not a JSON object"
            raise Malformed(f"answered HTTP {status} with more than {len(body):,} bytes of "
                            f"{what}")
        if not more:
            check_whole(endpoint, status, h.get("content-type", ""), body)
    except Malformed as exc:
        said, kind = [exc.detail], _kind(h.get("content-type", ""))
        if kind not in exc.detail:
            said.append(kind if kind == "no content type" else f"content-type {kind}")
        if 300 <= status < 400 and h.get("location"):
            said.append(f"a redirect to {_clean(h['location'], 200)}")
        look = glimpse(body)
        if look:
            said.append(look)
        return "; ".join(said)
    return None


def glimpse(body: bytes) -> str | None:
    """A short look at a body that is no answer, safe to print: an HTML page's title, else its
    first characters — control characters (an ESC sequence) dropped, whitespace collapsed."""
    text = body[:8192].decode("utf-8", "replace")
    title = _TITLE.search(text)
    if title and _clean(title.group(1), GLIMPSE):
        return f"page title \u201c{_clean(title.group(1), GLIMPSE)}\u201d"
    start = _clean(text, GLIMPSE)
    return f"it begins \u201c{start}\u201d" if start else None


def _clean(text: str, limit: int) -> str:
    cleaned = " ".join(_CONTROL.sub(" ", text[:limit * 4]).split())
    return cleaned[:limit] + ("…" if len(cleaned) > limit else "")
