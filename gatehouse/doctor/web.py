"""Step 4: the web path. One GET of the page a browser opens first (``/login`` on gatehouse,
the root elsewhere): it loads, or the edge serves a human check (``gatehouse-mitigated:
challenge`` / Cloudflare's ``cf-mitigated: challenge``), a 1020 "access denied" page, or an error
page."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from gatehouse.client import Answer, Outcome

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@dataclass(slots=True)
class WebResult:
    url: str
    outcome: str            # loads | challenge | blocked | error | timeout | unreachable
    status: int | None
    seconds: float
    request_id: str | None = None
    ray_id: str | None = None
    detail: str | None = None


def read_page(url: str, response: httpx.Response, seconds: float) -> WebResult:
    answer = Answer.read(response.status_code, response.headers, response.content)
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


async def check_web(client: httpx.AsyncClient, url: str) -> WebResult:
    start = time.perf_counter()
    try:
        response = await client.get(url, headers={"accept": BROWSER_ACCEPT},
                                    follow_redirects=True)
    except httpx.HTTPError as exc:
        outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
        return WebResult(url, outcome, None, time.perf_counter() - start,
                         detail=f"{type(exc).__name__}: {exc}".rstrip(": "))
    return read_page(url, response, time.perf_counter() - start)
