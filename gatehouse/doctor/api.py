"""Step 3: the API path. ``GET /v1/models``, then a 1-token chat completion, each classified
by :func:`gatehouse.client.classify` (ok / 401 / 403 1020 / challenge / 429 rate vs quota /
500 / 503 / timeout), with the request id and Ray ID; and who the key belongs to, from
``GET /v1/usage`` where the service answers it (gatehouse does)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gatehouse.client import Answer
from gatehouse.doctor.fetch import MAX_BYTES, read_capped
from gatehouse.doctor.statuspage import text
from gatehouse.upstream.shape import judge

# what a call ends in when no HTTP answer came back (beside the client's Outcome values)
UNREACHABLE, TIMEOUT, TLS_ERROR, SKIPPED = "unreachable", "timeout", "tls_error", "skipped"
MALFORMED_KEY = "malformed_key"  # the key cannot go in a header: nothing was sent
NOT_API = "not_api"  # an answer below 400 that is not what the endpoint returns (a proxy's page)
PEEK = 65536  # bytes of an answer declared larger than MAX_BYTES read to say what it is
ANSWER_DEADLINE = 60.0  # the whole answer (a stream of 1 token); each read has --timeout too


@dataclass(slots=True)
class Call:
    endpoint: str               # "POST /v1/chat/completions"
    outcome: str                # an Outcome value, or unreachable | timeout | tls_error
    status: int | None
    seconds: float
    code: str | None = None
    type: str | None = None
    message: str | None = None
    request_id: str | None = None
    ray_id: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(slots=True)
class Account:
    org: str | None = None
    project: str | None = None
    tier: str | None = None


@dataclass(slots=True)
class ApiResult:
    base: str
    key: str | None             # shown as its first 6 and last 4 characters
    model: str | None
    models: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    account: Account | None = None

    @property
    def main(self) -> Call | None:
        """The call that decides: the completion if it was made, else the model list."""
        return self.calls[-1] if self.calls else None


def show_key(key: str | None) -> str | None:
    """The key as reports show it: its first 6 and last 4 characters (a short one, 2), without
    the whitespace around it, a character that is not printable shown as ``?``."""
    key = (key or "").strip()
    if not key:
        return None
    shown = f"{key[:2]}…" if len(key) <= 12 else f"{key[:6]}…{key[-4:]}"
    return "".join(c if c.isprintable() else "?" for c in shown)


NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\t": "a tab",
         " ": "a space", "\u00a0": "a no-break space", "\ufeff": "a byte order mark",
         "\u200b": "a zero-width space"}


def key_problem(key: str | None) -> str | None:
    """Why the key cannot be sent as it is, or None. A key is printable ASCII without spaces:
    httpx refuses a header with a CR or LF (a key read from a file keeps its line break) and
    cannot encode a non-ASCII one (a key pasted with typographic quotes) — neither is the
    service's doing."""
    if not key:
        return None
    for at, c in enumerate(key):
        if "!" <= c <= "~":
            continue
        name = NAMES.get(c) or (f"the character {c!r} (U+{ord(c):04X})" if c.isprintable()
                                else f"a control character (U+{ord(c):04X})")
        if at == len(key.rstrip()) or at == len(key) - 1:
            said = f"ends in {name}"
        elif at == 0:
            said = f"starts with {name}"
        else:
            said = f"has {name} at character {at + 1}"
        return f"the key {show_key(key)} {said}"
    return None


def without_key(text: str | None, key: str | None) -> str | None:
    """``text`` with the key masked wherever it appears: an HTTP library's error quotes the
    header it refused (a key pasted with a trailing CR), a server may echo it in its error."""
    if not text or not key:
        return text
    return text.replace(key.strip(), show_key(key.strip()) or "")


def failed_call(endpoint: str, exc: httpx.HTTPError, seconds: float) -> Call:
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, httpx.TimeoutException):
        outcome = TIMEOUT
    elif "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        outcome = TLS_ERROR
    else:
        outcome = UNREACHABLE
    return Call(endpoint, outcome, None, seconds, message=text)


async def call(client: httpx.AsyncClient, method: str, url: str, path: str,
               key: str | None, body: dict[str, Any] | None = None,
               deadline: float = ANSWER_DEADLINE, shape: str | None = None
               ) -> tuple[Call, bytes | None]:
    """One call and its body: at most ``MAX_BYTES`` of it are read (enough for any error and
    the model list), the whole answer within ``deadline`` seconds. ``shape``: the endpoint
    (upstream/shape.py's name) whose answer a status below 400 must be — else it is
    ``not_api``, whatever answered (a proxy's sign-in page, a redirect, a blank body)."""
    endpoint = f"{method} {path}"
    headers = {"authorization": f"Bearer {key}"} if key else {}
    start = time.perf_counter()

    async def send() -> tuple[httpx.Response, bytes, bool]:
        async with client.stream(method, url, headers=headers, json=body) as response:
            content, more = await read_capped(response, MAX_BYTES, PEEK)
            return response, content, more

    try:
        response, content, more = await asyncio.wait_for(send(), deadline)
    except httpx.HTTPError as exc:
        failed = failed_call(endpoint, exc, time.perf_counter() - start)
        failed.message = without_key(failed.message, key)
        return failed, None
    except TimeoutError:
        return Call(endpoint, TIMEOUT, None, round(time.perf_counter() - start, 3),
                    message=f"no complete answer within {deadline:g} s"), None
    seconds = time.perf_counter() - start
    answer = Answer.read(response.status_code, response.headers, content)
    wrong = (judge(shape, answer.status, response.headers, content, more)
             if shape is not None and answer.status < 400 else None)
    return Call(endpoint, answer.outcome.value if wrong is None else NOT_API, answer.status,
                round(seconds, 3), code=answer.code, type=answer.type,
                message=without_key(text(wrong or answer.message), key),
                request_id=text(answer.request_id), ray_id=text(answer.ray_id),
                retry_after=answer.retry_after), content


def json_object(content: bytes | None) -> dict[str, Any]:
    try:
        data = orjson.loads(content or b"")
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def path_of(base: str, tail: str) -> str:
    return urlsplit(base).path.rstrip("/") + tail


async def check_api(client: httpx.AsyncClient, base: str, key: str | None,
                    model: str | None, deadline: float = ANSWER_DEADLINE) -> ApiResult:
    result = ApiResult(base, show_key(key), model)
    malformed = key_problem(key)
    if malformed is not None:  # sending it would only show the HTTP library refusing it
        result.calls.append(Call(f"GET {path_of(base, '/models')}", MALFORMED_KEY, None, 0.0,
                                 code="malformed_api_key",
                                 message=f"not sent: {malformed}"))
        return result
    listed, content = await call(client, "GET", base + "/models", path_of(base, "/models"), key,
                                 deadline=deadline, shape="models")
    result.calls.append(listed)
    if listed.ok:
        data = json_object(content).get("data")
        result.models = [str(m["id"])[:200] for m in (data if isinstance(data, list) else [])
                         if isinstance(m, dict) and "id" in m]
    if listed.outcome in (UNREACHABLE, TLS_ERROR, NOT_API):
        return result  # nothing more to learn on this path: the API is not what answers
    result.model = model or (result.models[0] if result.models else None)
    if result.model is not None:
        chat, _ = await call(
            client, "POST", base + "/chat/completions", path_of(base, "/chat/completions"), key,
            {"model": result.model, "max_tokens": 1,
             "messages": [{"role": "user", "content": "ping (gatehouse doctor)"}]}, deadline,
            shape="chat.completions")
        result.calls.append(chat)
    usage, content = await call(client, "GET", base + "/usage", path_of(base, "/usage"), key,
                                deadline=deadline, shape="usage")
    if usage.ok:
        body = json_object(content)
        result.account = Account(body.get("org"), body.get("project"), body.get("tier"))
    return result
