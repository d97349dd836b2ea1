"""Step 4: the web path. One GET of the page a browser opens first (``/login`` on gatehouse,
the root elsewhere): it loads, or the edge serves a human check (``gatehouse-mitigated:
challenge`` / Cloudflare's ``cf-mitigated: challenge``), a 1020 "access denied" page, or an error
page."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from gatehouse.client import Answer, Outcome
from gatehouse.doctor.fetch import MAX_BYTES, read_capped

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ANSWER_DEADLINE = 60.0


@dataclass(slots=True)
class WebResult:
    url: str
    outcome: str            # loads | challenge | blocked | error | timeout | unreachable
    status: int | None
    seconds: float
    request_id: str | None = None
    ray_id: str | None = None
    detail: str | None = None


def read_page(url: str, response: httpx.Response, content: bytes, seconds: float) -> WebResult:
    answer = Answer.read(response.status_code, response.headers, content)
    ids = {"request_id": answer.request_id, "ray_id": answer.ray_id}
    if answer.outcome is Outcome.CHALLENGE:
        return WebResult(url, "challenge", answer.status, seconds, **ids,
                         detail="a human check: a browser with JavaScript and cookies passes it")
    if answer.outcome is Outcome.ACCESS_DENIED:
        return WebResult(url, "blocked", answer.status, seconds, **ids,
                         detail="access denied (1020): a firewall rule or a ban matched")
    if answer.status >= 400:
        return WebResult(url, "error", answer.status, seconds, **ids,
                         detail=f"an error page (HTTP {answer.status} {response.reason_phrase})")
    return WebResult(url, "loads", answer.status, seconds, **ids)


async def check_web(client: httpx.AsyncClient, url: str,
                    deadline: float = ANSWER_DEADLINE) -> WebResult:
    """The page, its first ``MAX_BYTES`` read (a page is judged by its status and headers),
    within ``deadline`` seconds."""
    start = time.perf_counter()

    async def fetch() -> tuple[httpx.Response, bytes]:
        async with client.stream("GET", url, headers={"accept": BROWSER_ACCEPT},
                                 follow_redirects=True) as response:
            content, _ = await read_capped(response, MAX_BYTES)
            return response, content

    try:
        response, content = await asyncio.wait_for(fetch(), deadline)
    except httpx.HTTPError as exc:
        outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
        return WebResult(url, outcome, None, time.perf_counter() - start,
                         detail=f"{type(exc).__name__}: {exc}".rstrip(": "))
    except TimeoutError:
        return WebResult(url, "timeout", None, time.perf_counter() - start,
                         detail=f"no complete answer within {deadline:g} s")
    return read_page(url, response, content, time.perf_counter() - start)
