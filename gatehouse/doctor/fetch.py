"""Bounded JSON reads for the doctor's sources (a status API, the health view, request lookups).

Every read has a deadline for the whole answer — a server that drips one byte a second cannot
hold the doctor, whatever the per-read timeouts say — and a size cap, checked on the declared
length and again while reading (so a compressed bomb stops too). What goes wrong comes back as
a short reason, never as an exception: a source the doctor cannot read is a finding."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

MAX_BYTES = 4 * 1024 * 1024  # a large real status page (hundreds of components) is ~1 MB
DEADLINE = 10.0


@dataclass(slots=True)
class Fetched:
    url: str
    status: int | None          # None: no HTTP answer
    seconds: float
    data: Any = None            # the JSON body (of an error answer too, when it was JSON)
    error: str | None = None    # why there is no usable answer: None when status is 200 with JSON

    @property
    def ok(self) -> bool:
        return self.error is None


def describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return text[:300]


def error_code(data: Any) -> str | None:
    """The ``code`` (else ``type``) of an OpenAI-shaped error body."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("type")
    return str(code)[:80] if isinstance(code, str | int) else None


async def read_capped(response: httpx.Response, limit: int, peek: int = 0
                      ) -> tuple[bytes, bool]:
    """The body up to ``limit`` bytes, and whether there was more (the rest is not read). An
    answer that declares more than ``limit`` is not read, but for its first ``peek`` bytes
    (enough to tell an HTML page or blank space from JSON)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        if not peek:
            return b"", True
        limit = min(limit, peek)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


async def _read(client: httpx.AsyncClient, url: str, headers: dict[str, str], limit: int,
                start: float) -> Fetched:
    def done(status: int | None, error: str | None = None, data: Any = None) -> Fetched:
        return Fetched(url, status, round(time.perf_counter() - start, 3), data, error)

    try:
        async with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            body, more = await read_capped(response, limit)
            if more:
                return done(status, f"answer too large (over {limit:,} bytes)")
    except httpx.HTTPError as exc:
        return done(None, describe(exc))
    try:
        data = orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        data = None
        if status == 200:
            return done(status, "not JSON")
    if status != 200:
        code = error_code(data)
        return done(status, f"HTTP {status}" + (f" {code}" if code else ""), data)
    return done(status, None, data)


async def get_json(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                   deadline: float = DEADLINE, limit: int = MAX_BYTES) -> Fetched:
    """GET ``url`` and parse its JSON, within ``deadline`` seconds and ``limit`` bytes."""
    start = time.perf_counter()
    try:
        return await asyncio.wait_for(
            _read(client, url, {"accept": "application/json", **(headers or {})}, limit, start),
            deadline)
    except TimeoutError:
        return Fetched(url, None, round(time.perf_counter() - start, 3),
                       error=f"no complete answer within {deadline:g} s")
