"""A small Python client on the retry transport: ``chat``, ``models``, ``usage``, typed errors.

::

    from gatehouse.client import Client, QuotaExceeded, RateLimited

    with Client("http://127.0.0.1:8787/v1", api_key="gh-…") as client:
        reply = client.chat("demo", [{"role": "user", "content": "hi"}])

Answers come back as the service's JSON (dicts); failures raise one :mod:`errors` class per
outcome, after the transport has retried what the policy allows — and an answer below 400
that is not the endpoint's (upstream/shape.py's rules) raises ``MalformedAnswer``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self

import httpx

from gatehouse.client.budget import RetryBudget
from gatehouse.client.errors import from_malformed, from_response, from_transport_error
from gatehouse.client.ids import HEADER
from gatehouse.client.policy import RetryPolicy
from gatehouse.client.transport import AsyncRetryTransport, RetryTransport
from gatehouse.upstream.shape import judge

DEFAULT_BASE_URL = "http://127.0.0.1:8787/v1"
Message = dict[str, Any]


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get("GATEHOUSE_API_KEY")
    return {"authorization": f"Bearer {key}"} if key else {}


def _request(http: httpx.Client | httpx.AsyncClient, method: str, path: str,
             body: dict[str, Any] | None, client_request_id: str | None) -> httpx.Request:
    headers = {HEADER: client_request_id} if client_request_id else None
    return http.build_request(method, path, json=body, headers=headers)


def _result(response: httpx.Response, shape: str) -> Any:
    """The answer's JSON — when it is what ``shape`` (upstream/shape.py's endpoint name)
    returns: else :class:`MalformedAnswer` saying what came (a proxy's sign-in page, a
    redirect, a blank body), never a bare ``JSONDecodeError`` or ``KeyError``."""
    if response.status_code >= 400:
        raise from_response(response)
    wrong = judge(shape, response.status_code, response.headers, response.content)
    if wrong is not None:
        raise from_malformed(response, wrong)
    return response.json()


def _chat_body(model: str, messages: Sequence[Message], params: dict[str, Any]) -> dict[str, Any]:
    if params.get("stream"):
        raise ValueError("chat() returns whole answers; use the openai SDK on "
                         "RetryTransport for streams")
    return {"model": model, "messages": list(messages), **params}


class Client:
    """Sync client. One :class:`RetryBudget` is shared by all its requests (and threads)."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None, *,
                 timeout: float = 60.0, policy: RetryPolicy | None = None,
                 budget: RetryBudget | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.transport = RetryTransport(transport, policy=policy, budget=budget, sleep=sleep,
                                        rng=rng)
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/", timeout=timeout,
                                  headers=_headers(api_key), transport=self.transport)

    def chat(self, model: str, messages: Sequence[Message], *,
             client_request_id: str | None = None, **params: Any) -> dict[str, Any]:
        """``POST /chat/completions``; ``params`` go into the body (``max_tokens``, …)."""
        result: dict[str, Any] = self._call("POST", "chat/completions",
                                            _chat_body(model, messages, params), client_request_id,
                                            shape="chat.completions")
        return result

    def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "models", shape="models")["data"]
        return data

    def usage(self) -> dict[str, Any]:
        """``GET /usage``: this key's limits, what is used and when each resets."""
        result: dict[str, Any] = self._call("GET", "usage", shape="usage")
        return result

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              client_request_id: str | None = None, *, shape: str) -> Any:
        request = _request(self._http, method, path, body, client_request_id)
        try:
            response = self._http.send(request)
        except httpx.TransportError as error:
            raise from_transport_error(error, request) from error
        return _result(response, shape)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Async client; same methods, awaited."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None, *,
                 timeout: float = 60.0, policy: RetryPolicy | None = None,
                 budget: RetryBudget | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        kwargs: dict[str, Any] = {"sleep": sleep} if sleep else {}
        self.transport = AsyncRetryTransport(transport, policy=policy, budget=budget, rng=rng,
                                             **kwargs)
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=timeout,
                                       headers=_headers(api_key), transport=self.transport)

    async def chat(self, model: str, messages: Sequence[Message], *,
                   client_request_id: str | None = None, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", "chat/completions", _chat_body(model, messages, params), client_request_id,
            shape="chat.completions")
        return result

    async def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (await self._call("GET", "models", shape="models"))["data"]
        return data

    async def usage(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "usage", shape="usage")
        return result

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
                    client_request_id: str | None = None, *, shape: str) -> Any:
        request = _request(self._http, method, path, body, client_request_id)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as error:
            raise from_transport_error(error, request) from error
        return _result(response, shape)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
