"""The retry transport against a real server on 127.0.0.1 answering each class of answer.

Attempts are counted by the server (per X-Client-Request-Id); waits are the ones the transport
asked its injected ``sleep`` for, so nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from gatehouse.client import (
    AccessDenied,
    AsyncClient,
    AsyncRetryTransport,
    AtCapacity,
    ChallengeRequired,
    Client,
    ConnectionFailed,
    QuotaExceeded,
    RateLimited,
    RetryBudget,
    RetryPolicy,
    RetryTransport,
    Timeout,
    attempts_of,
)
from tests.support.answers import Answers
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "hi"}]
HALF = 0.5  # the injected rng: half the backoff ceiling, so waits are 0.25, 0.5, 1.0 …


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Answers]:
    server = Answers(tmp_path_factory.mktemp("answers"))
    yield server
    server.stop()


class Waits(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


def sync_client(waits: Waits, **policy: float) -> httpx.Client:
    transport = RetryTransport(policy=RetryPolicy(**policy), sleep=waits, rng=lambda: HALF)  # type: ignore[arg-type]
    return httpx.Client(transport=transport, timeout=5)


BACKOFF = [0.25, 0.5]
# answer class, how many of the first attempts get it, attempts the server sees, waits, last status
TABLE = [
    ("500", "all", 3, BACKOFF, 500),
    ("502", "all", 3, BACKOFF, 502),
    ("504", "all", 3, BACKOFF, 504),
    ("500", "1", 2, [0.25], 200),
    ("501", "all", 1, [], 501),
    ("at_capacity", "all", 3, [2.0, 2.0], 503),  # waits at least its Retry-After (2 s)
    ("at_capacity_long", "all", 1, [], 503),  # Retry-After 600 s > max_wait
    ("upstream_unavailable", "2", 3, BACKOFF, 200),
    ("rate", "1", 2, [1.5], 200),  # retry-after-ms 1500
    ("rate", "all", 3, [1.5, 1.5], 429),
    ("rate_long", "all", 1, [], 429),  # Retry-After an hour: returned at once
    ("rate_bare", "all", 1, [], 429),  # no Retry-After: not retried
    ("quota", "all", 1, [], 429),
    ("quota_bare", "all", 1, [], 429),
    ("400", "all", 1, [], 400),
    ("401", "all", 1, [], 401),
    ("1020", "all", 1, [], 403),
    ("challenge", "all", 1, [], 403),
    ("404", "all", 1, [], 404),
    ("409", "all", 1, [], 409),
    ("413", "all", 1, [], 413),
    ("422", "all", 1, [], 422),
    ("400_should_retry", "1", 2, [0.25], 200),  # x-should-retry: true wins over 400
    ("quota_should_retry", "all", 3, BACKOFF, 429),
    ("500_should_not", "all", 1, [], 500),  # x-should-retry: false wins over 500
]


def ids(row: tuple[object, ...]) -> str:
    return f"{row[0]}x{row[1]}"


@pytest.mark.parametrize("name, times, attempts, waits, status", TABLE, ids=map(ids, TABLE))
def test_sync_transport_per_answer(answers: Answers, name: str, times: str, attempts: int,
                                   waits: list[float], status: int) -> None:
    slept = Waits()
    with sync_client(slept) as http:
        response = http.post(f"{answers.url}/{name}/{times}/v1/chat/completions",
                             json={"model": "m", "messages": HELLO})
    rid = response.request.headers["x-client-request-id"]
    assert uuid.UUID(rid).version == 4
    assert answers.attempts()["by_id"][rid] == attempts  # one id for every retry
    assert (response.status_code, slept, attempts_of(response)) == (status, waits, attempts)


@pytest.mark.parametrize("name, times, attempts, waits, status", TABLE, ids=map(ids, TABLE))
async def test_async_transport_per_answer(answers: Answers, name: str, times: str, attempts: int,
                                          waits: list[float], status: int) -> None:
    slept = Waits()
    transport = AsyncRetryTransport(sleep=slept.asleep, rng=lambda: HALF)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        response = await http.post(f"{answers.url}/{name}/{times}/v1/chat/completions",
                                   json={"model": "m", "messages": HELLO},
                                   headers={"X-Client-Request-Id": f"mine-{uuid.uuid4()}"})
    rid = response.request.headers["x-client-request-id"]
    assert rid.startswith("mine-")  # the caller's own id is kept
    assert answers.attempts()["by_id"][rid] == attempts
    assert (response.status_code, slept, attempts_of(response)) == (status, waits, attempts)


def test_connection_refused_is_retried_with_backoff() -> None:
    slept = Waits()
    with sync_client(slept) as http, pytest.raises(httpx.ConnectError) as info:
        http.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", json={})
    assert (attempts_of(info.value), slept) == (3, BACKOFF)


def test_connection_reset_is_retried(answers: Answers) -> None:
    slept = Waits()
    with sync_client(slept) as http, pytest.raises(httpx.TransportError) as info:
        http.post(f"{answers.url}/reset/all/v1/chat/completions", json={})
    rid = info.value.request.headers["x-client-request-id"]
    assert answers.attempts()["by_id"][rid] == 3 and slept == BACKOFF
    assert any(rid in note for note in info.value.__notes__)


@pytest.mark.parametrize("method, retry_after_send, attempts", [
    ("POST", True, 2),  # the official SDK's practice: a lost answer is retried, POST or not
    ("POST", False, 1),  # opted out: the POST may have been acted on
    ("GET", False, 2),  # a GET is always safe to send again
])
def test_read_timeout_after_the_body_was_sent(answers: Answers, method: str,
                                              retry_after_send: bool, attempts: int) -> None:
    transport = RetryTransport(policy=RetryPolicy(max_retries=1,
                                                  retry_after_send=retry_after_send),
                               sleep=Waits(), rng=lambda: HALF)
    with httpx.Client(transport=transport, timeout=httpx.Timeout(5, read=0.2)) as http, \
            pytest.raises(httpx.ReadTimeout) as info:
        http.request(method, f"{answers.url}/stall/all/v1/models")
    rid = info.value.request.headers["x-client-request-id"]
    assert answers.attempts()["by_id"][rid] == attempts


def test_a_body_that_cannot_be_replayed_is_not_retried(answers: Answers) -> None:
    with sync_client(Waits()) as http:
        response = http.post(f"{answers.url}/500/all/v1/x", content=iter([b"{}"]))
    assert response.status_code == 500 and attempts_of(response) == 1


# -- the retry budget --------------------------------------------------------------------------


async def storm(answers: Answers, budget: RetryBudget, requests: int, concurrency: int) -> int:
    """``requests`` requests, ``concurrency`` at a time, at a server that always answers 503;
    returns the attempts the server saw."""
    answers.reset()
    transport = AsyncRetryTransport(budget=budget, sleep=Waits().asleep)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(transport=transport, timeout=10, limits=limits) as http:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> int:
            async with gate:
                r = await http.post(f"{answers.url}/upstream_unavailable/all/v1/chat/completions",
                                    json={"model": "m", "messages": HELLO})
                return r.status_code

        statuses = await asyncio.gather(*(one() for _ in range(requests)))
    assert set(statuses) == {503}
    total: int = answers.attempts()["total"]
    return total


async def test_a_sustained_503_storm_is_not_amplified(answers: Answers) -> None:
    # retries <= 10 % of requests over 10 s, at least 10; the budget's clock stands still so
    # the whole storm is one window however long a loaded machine takes (over several
    # windows, each one's 10 % is exact but their sum may pass 550)
    budget = RetryBudget(clock=lambda: 0.0)
    attempts = await storm(answers, budget, requests=500, concurrency=20)
    assert 500 < attempts <= 550, attempts
    print(f"\nstorm: 500 requests, concurrency 20, always 503: {attempts} attempts "
          f"({attempts / 500:.3f}x); budget {budget.counts()}")


def test_sync_clients_in_threads_share_one_budget(answers: Answers) -> None:
    answers.reset()
    transport = RetryTransport(sleep=Waits())
    with httpx.Client(transport=transport, timeout=10) as http, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: http.post(
            f"{answers.url}/upstream_unavailable/all/v1/x", json={}).status_code, range(300)))
    assert set(statuses) == {503}
    assert 300 < answers.attempts()["total"] <= 330


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_isolated_failures_are_still_retried_after_a_storm(answers: Answers) -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    await storm(answers, budget, requests=200, concurrency=20)
    clock.now += 11  # the storm has left the window
    answers.reset()
    transport = AsyncRetryTransport(budget=budget, sleep=Waits().asleep)
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        statuses = []
        for i in range(100):  # every tenth request fails once
            path = "500/1" if i % 10 == 0 else "ok/0"
            statuses.append((await http.post(f"{answers.url}/{path}/v1/x", json={})).status_code)
    assert statuses == [200] * 100
    assert answers.attempts()["total"] == 110


# -- under the official SDK, and the small client -----------------------------------------------


def sdk(answers: Answers, path: str, waits: Waits) -> openai.OpenAI:
    http = httpx.Client(transport=RetryTransport(sleep=waits, rng=lambda: HALF))
    # openai >= 3 is built on httpx2 and takes an httpx.Client as it is (typed for httpx2)
    return openai.OpenAI(base_url=f"{answers.url}/{path}/v1", api_key="sk-x", max_retries=0,
                         http_client=http)  # type: ignore[arg-type]


def test_official_sdk_on_the_transport(answers: Answers) -> None:
    waits = Waits()
    with sdk(answers, "at_capacity/1", waits) as client:
        reply = client.chat.completions.with_raw_response.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert reply.parse().choices[0].message.content == "fine" and waits == [2.0]
    assert answers.attempts()["by_id"][reply.http_request.headers["x-client-request-id"]] == 2

    with sdk(answers, "quota/all", waits) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    error = info.value
    assert error.code == "insufficient_quota" and error.request_id == "req_answers"
    rid = error.response.request.headers["x-client-request-id"]
    assert answers.attempts()["by_id"][rid] == 1
    assert attempts_of(error.response) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("path, error, code, attempts", [
    ("quota/all", QuotaExceeded, "insufficient_quota", 1),
    ("rate/all", RateLimited, "rate_limit_exceeded", 3),
    ("at_capacity/all", AtCapacity, "at_capacity", 3),
    ("1020/all", AccessDenied, "1020", 1),
    ("challenge/all", ChallengeRequired, "challenge_required", 1),
])
def test_client_raises_one_class_per_outcome_with_every_id(
        answers: Answers, path: str, error: type[Exception], code: str, attempts: int) -> None:
    with Client(f"{answers.url}/{path}/v1", api_key="k", sleep=Waits()) as client, \
            pytest.raises(error) as info:
        client.chat("m", HELLO, client_request_id=f"trace-{path}")
    raised = info.value
    assert (raised.code, raised.request_id, raised.client_request_id, raised.attempts) == (  # type: ignore[attr-defined]
        code, "req_answers", f"trace-{path}", attempts)
    assert answers.attempts()["by_id"][f"trace-{path}"] == attempts
    if code in ("1020", "challenge_required"):
        assert raised.ray_id and raised.ray_id in str(raised)  # type: ignore[attr-defined]
    if code in ("rate_limit_exceeded", "at_capacity"):
        assert raised.retry_after  # type: ignore[attr-defined]


async def test_async_client_answers_and_connection_errors(answers: Answers) -> None:
    async with AsyncClient(f"{answers.url}/500/2/v1", sleep=Waits().asleep) as client:
        reply = await client.chat("m", HELLO)
    assert reply["choices"][0]["message"]["content"] == "fine"
    async with AsyncClient(f"http://127.0.0.1:{free_port()}/v1",
                           sleep=Waits().asleep) as client:
        with pytest.raises(ConnectionFailed) as info:
            await client.models()
    assert info.value.attempts == 3 and info.value.client_request_id
    with Client(f"{answers.url}/stall/all/v1", timeout=0.2, sleep=Waits(),
                policy=RetryPolicy(max_retries=1)) as sync, pytest.raises(Timeout) as timed:
        sync.usage()
    assert timed.value.attempts == 2
