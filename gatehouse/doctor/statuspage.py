"""Step 1: the status page. Reads any Statuspage v2 ``summary.json`` (ours at
``/api/v2/summary.json``, OpenAI's, …) and answers: is there a live incident, and does it touch
the component that matters — the API, the model — rather than another product's?

The format: ``{"page", "status": {"indicator", "description"}, "components": [{"id", "name",
"status", "group_id", "group", …}], "incidents": [{"name", "status", "impact", "shortlink",
"components": [...], "incident_updates": [{"body", …}]}], "scheduled_maintenances": [...]}``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

DONE = {"resolved", "postmortem", "completed"}
LIVE_MAINTENANCE = {"in_progress", "verifying"}
OPERATIONAL = {"operational", "under_maintenance"}


@dataclass(slots=True)
class Incident:
    name: str
    status: str
    impact: str
    components: list[str]
    shortlink: str | None
    latest_update: str | None
    affects_us: bool | None  # None: the incident names no component


@dataclass(slots=True)
class StatusResult:
    url: str
    fetched: bool
    seconds: float
    error: str | None = None
    page: str | None = None
    indicator: str | None = None      # none | minor | major | critical | maintenance
    description: str | None = None
    watched: list[str] = field(default_factory=list)        # components that matter, found
    degraded: dict[str, str] = field(default_factory=dict)  # of those, not operational
    incidents: list[Incident] = field(default_factory=list)

    @property
    def ours(self) -> list[Incident]:
        """Live incidents that touch (or may touch) the components that matter."""
        return [i for i in self.incidents if i.affects_us is not False]

    @property
    def others(self) -> list[Incident]:
        return [i for i in self.incidents if i.affects_us is False]

    @property
    def trouble(self) -> bool:
        return bool(self.ours or self.degraded)


def matches(name: str, wanted: tuple[str, ...]) -> bool:
    """``API`` matches "API" and "APIs" but not "Rapid"; a model name matches its component."""
    lowered = name.lower()
    return any(lowered == w.lower() or re.search(r"(?<![a-z0-9])" + re.escape(w.lower()), lowered)
               for w in wanted if w)


def watched_ids(components: list[dict[str, Any]], wanted: tuple[str, ...]) -> dict[str, str]:
    """id → name of the components that matter, a matching group bringing its members."""
    found = {c["id"]: c["name"] for c in components if matches(str(c.get("name", "")), wanted)}
    for c in components:
        if c.get("group_id") in found:
            found[c["id"]] = c["name"]
    return found


def read_summary(url: str, summary: dict[str, Any], wanted: tuple[str, ...],
                 seconds: float = 0.0) -> StatusResult:
    components: list[dict[str, Any]] = [c for c in summary.get("components") or []
                                        if isinstance(c, dict) and "id" in c]
    ours = watched_ids(components, wanted)
    status = summary.get("status") or {}
    result = StatusResult(url, True, seconds, page=(summary.get("page") or {}).get("name"),
                          indicator=status.get("indicator"),
                          description=status.get("description"),
                          watched=sorted(set(ours.values())))
    for c in components:
        if c["id"] in ours and not c.get("group") and c.get("status") not in OPERATIONAL:
            result.degraded[c["name"]] = str(c.get("status"))
    live = [i for i in summary.get("incidents") or [] if i.get("status") not in DONE]
    live += [m for m in summary.get("scheduled_maintenances") or []
             if m.get("status") in LIVE_MAINTENANCE]
    for raw in live:
        touched = [c for c in raw.get("components") or [] if isinstance(c, dict)]
        names = [str(c.get("name")) for c in touched]
        affects = (any(c.get("id") in ours or matches(str(c.get("name", "")), wanted)
                       for c in touched) if touched else None)
        updates = raw.get("incident_updates") or []
        result.incidents.append(Incident(
            name=str(raw.get("name")), status=str(raw.get("status")),
            impact=str(raw.get("impact", "maintenance" if "scheduled_for" in raw else "none")),
            components=names, shortlink=raw.get("shortlink"),
            latest_update=updates[0].get("body") if updates else None, affects_us=affects))
    return result


async def fetch_summary(client: httpx.AsyncClient, url: str
                        ) -> tuple[dict[str, Any] | None, str | None, float]:
    """The summary (or why there is none) and how long it took."""
    start = time.perf_counter()
    try:
        response = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}".rstrip(": "), time.perf_counter() - start
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        return None, f"HTTP {response.status_code}", seconds
    try:
        summary = response.json()
    except ValueError:
        return None, "not JSON (not a Statuspage v2 summary)", seconds
    if not isinstance(summary, dict) or "components" not in summary:
        return None, "no components (not a Statuspage v2 summary)", seconds
    return summary, None, seconds


def status_result(url: str, fetched: tuple[dict[str, Any] | None, str | None, float],
                  wanted: tuple[str, ...]) -> StatusResult:
    summary, error, seconds = fetched
    if summary is None:
        return StatusResult(url, False, round(seconds, 3), error=error)
    return read_summary(url, summary, wanted, round(seconds, 3))


async def check_status(client: httpx.AsyncClient, url: str, wanted: tuple[str, ...]
                       ) -> StatusResult:
    return status_result(url, await fetch_summary(client, url), wanted)
