"""The retry policy as an httpx transport, so it can sit under any httpx client — the official
``openai`` SDK included (pass ``max_retries=0`` there so only this layer retries)::

    OpenAI(base_url=..., api_key=..., max_retries=0,
           http_client=httpx.Client(transport=RetryTransport()))

Each request gets an ``X-Client-Request-Id`` (kept if the caller set one) and keeps it on every
retry. An answer is retried only before it is handed back — once a response (a stream
included) is returned its status is final, and nothing is replayed mid-stream. Error bodies
(status >= 400) are read before deciding, as 429 and 503 mean different things by their code;
an answer that is retried is closed first. A request whose body cannot be sent twice (a
generator) is never retried.

What came of the attempts rides along: ``attempts_of(response)`` / ``attempts_of(error)``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from gatehouse.client.budget import RetryBudget
from gatehouse.client.ids import ensure_client_request_id
from gatehouse.client.outcome import Answer
from gatehouse.client.policy import Decision, RetryPolicy

ATTEMPTS = "gatehouse_attempts"


def attempts_of(thing: httpx.Response | BaseException) -> int:
    """How many times the transport sent the request behind this answer or error (0: unknown)."""
    if isinstance(thing, httpx.Response):
        return int(thing.extensions.get(ATTEMPTS, 0))
    return int(getattr(thing, ATTEMPTS, 0))


class Attempts:
    """One request's way through the policy and the budget; the transports do the I/O."""

    def __init__(self, request: httpx.Request, policy: RetryPolicy, budget: RetryBudget,
                 rng: Callable[[], float]) -> None:
        self.request = request
        self.client_request_id = ensure_client_request_id(request)
        self.policy = policy
        self.budget = budget
        self.rng = rng
        self.made = 0
        self.replayable = isinstance(request.stream, httpx.ByteStream)
        budget.record_request()

    def sent(self) -> None:
        self.made += 1

    def on_answer(self, response: httpx.Response) -> Decision:
        answer = Answer.read(response.status_code, response.headers, response.content)
        return self._spend(self.policy.on_answer(self.made - 1, answer, self.rng))

    def on_error(self, error: Exception) -> Decision:
        return self._spend(self.policy.on_error(self.made - 1, error, self.request.method,
                                                self.rng))

    def final(self, response: httpx.Response) -> httpx.Response:
        response.extensions[ATTEMPTS] = self.made
        return response

    def failed(self, error: Exception) -> Exception:
        setattr(error, ATTEMPTS, self.made)
        error.add_note(f"gatehouse: {self.made} attempt(s), "
                       f"x-client-request-id {self.client_request_id}")
        return error

    def _spend(self, decision: Decision) -> Decision:
        if not decision.retry:
            return decision
        if not self.replayable:
            return Decision(False, reason=f"{decision.reason}; the body cannot be sent again")
        if not self.budget.try_spend():
            return Decision(False, reason=f"{decision.reason}; retry budget spent")
        return decision


class RetryTransport(httpx.BaseTransport):
    """Sync: wraps ``inner`` (a plain ``httpx.HTTPTransport`` by default)."""

    def __init__(self, inner: httpx.BaseTransport | None = None, *,
                 policy: RetryPolicy | None = None, budget: RetryBudget | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.policy = policy or RetryPolicy()
        self.budget = budget or RetryBudget()
        self.sleep = sleep
        self.rng = rng

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempts = Attempts(request, self.policy, self.budget, self.rng)
        while True:
            attempts.sent()
            try:
                response = self.inner.handle_request(request)
                if response.status_code < 400:
                    return attempts.final(response)
                try:
                    response.read()
                except BaseException:
                    response.close()
                    raise
            except httpx.TransportError as error:
                decision = attempts.on_error(error)
                if not decision.retry:
                    raise attempts.failed(error)
            else:
                decision = attempts.on_answer(response)
                if not decision.retry:
                    return attempts.final(response)
                response.close()
            self.sleep(decision.wait)

    def close(self) -> None:
        self.inner.close()


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """Async twin of :class:`RetryTransport`; ``sleep`` is awaited."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, *,
                 policy: RetryPolicy | None = None, budget: RetryBudget | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.policy = policy or RetryPolicy()
        self.budget = budget or RetryBudget()
        self.sleep = sleep
        self.rng = rng

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempts = Attempts(request, self.policy, self.budget, self.rng)
        while True:
            attempts.sent()
            try:
                response = await self.inner.handle_async_request(request)
                if response.status_code < 400:
                    return attempts.final(response)
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
            except httpx.TransportError as error:
                decision = attempts.on_error(error)
                if not decision.retry:
                    raise attempts.failed(error)
            else:
                decision = attempts.on_answer(response)
                if not decision.retry:
                    return attempts.final(response)
                await response.aclose()
            await self.sleep(decision.wait)

    async def aclose(self) -> None:
        await self.inner.aclose()
