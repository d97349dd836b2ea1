"""RequestContext: what flows through the stages of one request."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

from gatehouse.errors import GatehouseError

CANCELLED = "cancelled"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    counted_by: str = "upstream"  # or "gateway": the backend reported none, the gateway counted

    @classmethod
    def from_openai(cls, data: Any) -> Usage | None:
        """Chat/completions usage, or the Responses API's (``input_tokens``, ``output_tokens``;
        cached input and reasoning output are within those and charged alike)."""
        if not isinstance(data, dict):
            return None
        if "input_tokens" in data and "prompt_tokens" not in data:
            prompt, completion = data.get("input_tokens"), data.get("output_tokens") or 0
        else:
            prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens") or 0
        if not _count(prompt) or not _count(completion):
            return None  # not a count (a negative, a boolean, a billion): the gateway counts
        total = data.get("total_tokens")
        # a total below its parts would charge less than was used
        return cls(prompt, completion,
                   max(total, prompt + completion) if _count(total) else prompt + completion)


# a backend's token count is believed between these (a larger one would not fit the
# store's columns, and no request holds it)
MAX_TOKENS_REPORTED = 1_000_000_000


def _count(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_TOKENS_REPORTED


class ByteStream(Protocol):
    """An async iterable of bytes that can be closed early (an async generator is one)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Reply:
    """What the pipeline answers: a whole body, or a stream of bytes sent as they come."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: ByteStream | None = None
    # a whole answer's stage exits, left to run once it is sent (Pipeline.handle(defer=True))
    after: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class Outcome:
    """How a request ended, handed to every stage's ``exit``.

    ``kind`` is ``ok``, ``error`` (a GatehouseError was answered), ``upstream_aborted``
    (the stream broke after it started), ``client_disconnected`` or ``cancelled``.
    """

    kind: str
    status: int
    error: GatehouseError | None = None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    client: tuple[str, int] | None
    receive: Any = None
    query: bytes = b""  # the raw query string (only the endpoints that take one read it)
    # the client's address as the edge resolved it (behind trusted proxies: the forwarded one);
    # quota, telemetry and the access log use this, never ``client``
    client_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    client_request_id: str | None = None
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    endpoint: str = ""
    # set by the schema stage
    body: dict[str, Any] | None = None
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    # set by later stages (identity, quota, admission) — free for each to use
    principal: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    # set by the upstream stage
    backend: str | None = None
    backend_model: str | None = None  # the name the answering backend knows the model by
    upstream_request_id: str | None = None  # the backend's own id for the call, if it sent one
    # backends tried, in order: "name", or "name:why" ("a:503", "a:ConnectFailed",
    # f"a:{CANCELLED}" for a call in flight when the client left)
    attempts: list[str] = field(default_factory=list)
    usage: Usage | None = None
    counted_prompt: int | None = None  # the prompt's tokens by the model's tokenizer (quota)
    first_byte_at: float | None = None
    finished_at: float | None = None
    # headers every stage may add to the answer (rate limits, …)
    response_headers: dict[str, str] = field(default_factory=dict)
    reply: Reply | None = None
    # set once the exits have begun: from then on a client leaving cancels nothing
    exiting: bool = False
    # an answer the connection layer gave while the app ran and read no body (a 408 or 413
    # on a GET's body): the request ends with it, not as a client that left
    refused: GatehouseError | None = None
    # what the stages decided, for the RequestRecord (telemetry)
    ray_id: str | None = None
    edge_verdict: str | None = None  # pass | deny | challenge
    quota_decision: str | None = None  # allowed | local | unlimited | refused
    admission_wait: float | None = None  # seconds waited for a slot
    upstream_status: int | None = None  # the answering backend's status

    @property
    def wants_html(self) -> bool:
        return prefers_html(self.headers.get("accept", ""))

    def decided(self) -> None:
        """The answer is decided: from now on a client leaving cancels nothing (the exits are
        owed all the same), and the record's latency ends here, not when the write does."""
        self.exiting = True
        if self.finished_at is None:
            self.finished_at = time.perf_counter()


def prefers_html(accept: str) -> bool:
    """True when text/html is preferred over JSON (q-values honoured, ties go to JSON)."""
    if "html" not in accept:
        return False
    html = json = 0.0
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            html = max(html, q)
        elif media in ("application/json", "*/*", "application/*"):
            json = max(json, q * (1.0 if media == "application/json" else 0.99))
    return html > json


def header_dict(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """An ASGI scope's headers by lower-cased name; repeated names are joined with ", " (RFC
    9110 §5.3) in one pass at the end, so a flood of one name costs linear time, not the
    quadratic time of joining as they come."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            if repeated is None:
                repeated = {}
            values = repeated.get(name)
            if values is None:
                values = repeated[name] = [headers[name]]
            values.append(value)
        else:
            headers[name] = value
    if repeated is not None:
        for name, values in repeated.items():
            headers[name] = ", ".join(values)
    return headers
