"""The caller's own traffic as the gateway counted it: ``GET /v1/health?window=5m`` (and
``&model=M`` for the model being diagnosed) with the caller's key — its organization's requests
only (docs/telemetry.md). Which error classes are the service's and which the caller's is what
"is it me or them?" weighs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from gatehouse.doctor.fetch import DEADLINE, Fetched, get_json

WINDOW = "5m"
# the service failed these (5xx): not the caller's doing
SERVICE_CLASSES = ("server_error", "unavailable", "at_capacity", "timeout")
# the caller's account, key, network or request: retrying as is will not help
CALLER_CLASSES = ("auth", "quota", "rate_limited", "client_error", "blocked", "client_gone")
MAX_CLASSES = 64


@dataclass(slots=True)
class HealthResult:
    path: str                     # what was asked, e.g. /v1/health?window=5m&model=demo
    model: str | None
    fetched: bool
    error: str | None = None
    http_status: int | None = None
    window: str = WINDOW
    requests: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # error class → count (not ok, > 0)

    def count(self, classes: tuple[str, ...]) -> int:
        return sum(n for c, n in self.failed.items() if c in classes)

    @property
    def service_failed(self) -> int:
        return self.count(SERVICE_CLASSES)

    @property
    def caller_failed(self) -> int:
        return self.count(CALLER_CLASSES)

    def pct(self, count: int) -> float | None:
        return round(100 * count / self.requests, 1) if self.requests else None

    @property
    def subject(self) -> str:
        return f"requests to {self.model}" if self.model else "your organization's requests"


def count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_view(result: HealthResult, view: Any) -> HealthResult:
    """Fill ``result`` from the health answer; a wrong shape makes it unreadable, with why."""
    if not isinstance(view, dict):
        return _unreadable(result, "not a JSON object (not a gatehouse health view)")
    requests, classes = count(view.get("requests")), view.get("error_classes")
    if requests is None or not isinstance(classes, dict):
        return _unreadable(result, "no request count or error classes (not a gatehouse health "
                                   "view)")
    result.requests = requests
    for name, entry in list(classes.items())[:MAX_CLASSES]:
        n = count(entry.get("count")) if isinstance(entry, dict) else None
        if name != "ok" and n:
            result.failed[str(name)[:40]] = n
    if isinstance(view.get("window"), str):
        result.window = view["window"][:10]
    return result


def _unreadable(result: HealthResult, why: str) -> HealthResult:
    result.fetched, result.error = False, why
    return result


def from_fetched(path: str, model: str | None, fetched: Fetched) -> HealthResult:
    result = HealthResult(path, model, fetched.ok, fetched.error, fetched.status)
    return read_view(result, fetched.data) if fetched.ok else result


async def read_health(client: httpx.AsyncClient, api_base: str, key: str,
                      model: str | None = None, deadline: float = DEADLINE) -> HealthResult:
    query = {"window": WINDOW, **({"model": model} if model else {})}
    url = f"{api_base}/health?{urlencode(query)}"
    path = f"{urlsplit(url).path}?{urlsplit(url).query}"
    fetched = await get_json(client, url, {"authorization": f"Bearer {key}"}, deadline)
    return from_fetched(path, model, fetched)
