"""Steady open-loop load for the fault tests: chat completions sent at a fixed rate through
one URL from a background thread, whatever the answers do (a hung call does not hold the next
one back), each answer recorded with when it was sent, how long it took, its status, error
code, request id and Retry-After. Bounded: a fixed count, every call with a 30-s timeout.

    with SteadyLoad(url, keys, rate=25, seconds=40) as load:
        time.sleep(5); proxy.cut(); ...      # faults, timed by load.elapsed()
    answers = load.answers                   # once the last call has been answered
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

CALL_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # seconds after the load started
    took: float  # seconds until the whole answer was read
    status: int  # -1: no answer (timeout, connection broken); 0: a stream broken off after 200
    code: str | None  # the error's code, for an answer in OpenAI's error shape
    request_id: str | None
    retry_after: str | None
    stream: bool
    key: int  # which of the keys it was sent with

    @property
    def answered(self) -> float:
        return self.sent + self.took


class SteadyLoad:
    """``rate`` calls a second for ``seconds`` to ``url``'s /v1/chat/completions, taking turns
    over ``keys``; every ``stream_every``-th call streams (0: none, 1: all)."""

    def __init__(self, url: str, keys: list[str], *, rate: float, seconds: float,
                 model: str = "m", stream_every: int = 0) -> None:
        self.url, self.keys, self.rate, self.seconds = url, keys, rate, seconds
        self.model, self.stream_every = model, stream_every
        self.answers: list[Answer] = []
        self._t0 = 0.0
        self.wall0 = 0.0  # time.time() when the load started: ``wall0 + sent`` is wall time
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def at(self, second: float) -> None:
        """Sleep until ``second`` s after the load started."""
        time.sleep(max(0.0, second - self.elapsed()))

    def __enter__(self) -> Self:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._thread.join(self.seconds + CALL_TIMEOUT + 30)
        assert not self._thread.is_alive(), "the load did not end in time"
        self.answers.sort(key=lambda a: a.sent)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.url, timeout=CALL_TIMEOUT,
                                     limits=limits) as client:
            self._t0, self.wall0 = time.monotonic(), time.time()
            self._started.set()
            tasks = []
            n = 0
            while (due := n / self.rate) < self.seconds:
                await asyncio.sleep(max(0.0, due - self.elapsed()))
                stream = self.stream_every > 0 and n % self.stream_every == 0
                tasks.append(asyncio.create_task(self._one(client, n % len(self.keys), stream)))
                n += 1
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, key: int, stream: bool) -> None:
        sent = self.elapsed()
        body = {"model": self.model, "messages": [{"role": "user", "content": "hello"}],
                "stream": stream}
        headers = {"authorization": f"Bearer {self.keys[key]}"}
        code = None
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body,
                                     headers=headers) as r:
                text = (await r.aread()).decode("utf-8", "replace")
            status = r.status_code
            if status != 200 and "json" in r.headers.get("content-type", ""):
                code = r.json()["error"]["code"]
            elif stream and status == 200 and not text.rstrip().endswith("[DONE]"):
                status = 0
            rid, retry = r.headers.get("x-request-id"), r.headers.get("retry-after")
        except httpx.HTTPError:
            status, rid, retry = -1, None, None
        self.answers.append(Answer(sent, self.elapsed() - sent, status, code, rid, retry,
                                   stream, key))


def by_status(answers: list[Answer]) -> dict[tuple[int, str | None], int]:
    """How many answers of each (status, code)."""
    counts: dict[tuple[int, str | None], int] = {}
    for a in answers:
        counts[(a.status, a.code)] = counts.get((a.status, a.code), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")))
