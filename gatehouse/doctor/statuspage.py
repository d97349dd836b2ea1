"""Step 1: the status page. Reads any Statuspage v2 ``summary.json`` (ours at
``/api/v2/summary.json``, OpenAI's, …) and answers: is there a live incident or maintenance, and
does it touch the component that matters — the API, the model — rather than another product's?

The format (tests/fixtures/statuspage/schema.json): ``{"page", "status": {"indicator",
"description"}, "components": [{"id", "name", "status", "group_id", "group", "components"?, …}],
"incidents": [{"name", "status", "impact", "shortlink", "started_at"?, "components"?,
"incident_updates": [{"body", "affected_components"?, …}]}], "scheduled_maintenances": [...]}``.

Any server may answer anything: the read is bounded (fetch.py), and a summary of the wrong shape
is "unreadable: why", never an exception. Inside a well-formed summary, items of the wrong type
are skipped (and counted in ``notes``); text is cut to a bounded length and stripped of control
characters, so a hostile page cannot write escape sequences to the terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from gatehouse.doctor.fetch import DEADLINE, MAX_BYTES, Fetched, get_json

DONE = {"resolved", "postmortem", "completed"}
LIVE_MAINTENANCE = {"in_progress", "verifying"}
OPERATIONAL = {"operational", "under_maintenance"}
MAX_COMPONENTS = 5000
MAX_EVENTS = 500
MAX_TEXT = 300
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass(slots=True)
class Incident:
    name: str
    status: str
    impact: str
    components: list[str]
    shortlink: str | None
    latest_update: str | None
    affects_us: bool | None  # None: the incident names no component
    since: str | None = None  # started_at (else created_at); a maintenance's scheduled_for
    maintenance: bool = False


@dataclass(slots=True)
class StatusResult:
    url: str
    fetched: bool
    seconds: float
    error: str | None = None
    http_status: int | None = None    # the HTTP status when it was not a readable 200
    page: str | None = None
    indicator: str | None = None      # none | minor | major | critical | maintenance
    description: str | None = None
    watched: list[str] = field(default_factory=list)        # components that matter, found
    degraded: dict[str, str] = field(default_factory=dict)  # of those, not operational
    incidents: list[Incident] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)          # what was skipped, and why

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

    @property
    def absent(self) -> bool:
        """The service publishes no status API here (404)."""
        return self.http_status == 404


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A string from the page, bounded and without control characters; anything else: None."""
    if not isinstance(value, str):
        return None
    cleaned = " ".join(CONTROL.sub(" ", value[:limit * 2]).split())
    return cleaned[:limit] + ("…" if len(cleaned) > limit else "") if cleaned else None


def objects(value: Any, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The objects of a list (at most ``limit``) and how many items were not objects."""
    if not isinstance(value, list):
        return [], 0
    found = [v for v in value[:limit] if isinstance(v, dict)]
    return found, len(value[:limit]) - len(found)


def squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def matches(name: str, wanted: tuple[str, ...]) -> bool:
    """``API`` matches "API", "APIs" and "OpenAI API" but not "Rapid"; a model's name matches
    its component however it is spelled ("llama-3-8b", "Llama 3 8B")."""
    lowered = name.lower()
    return any(lowered == w.lower() or squash(name) == squash(w)
               or re.search(r"(?<![a-z0-9])" + re.escape(w.lower()), lowered)
               for w in wanted if w)


def watched_ids(components: list[dict[str, Any]], wanted: tuple[str, ...]) -> dict[str, str]:
    """id → name of the components that matter, a matching group bringing its members (by
    their ``group_id``, or by the group's ``components`` list)."""
    found = {c["id"]: c["name"] for c in components if matches(c["name"], wanted)}
    members: set[str] = set()
    for c in components:
        if c["id"] in found and isinstance(c.get("components"), list):
            members |= {m for m in c["components"][:MAX_COMPONENTS] if isinstance(m, str)}
    for c in components:
        if c.get("group_id") in found or c["id"] in members:
            found[c["id"]] = c["name"]
    return found


def shape_error(summary: Any) -> str | None:
    """Why this is not a summary the doctor can read, or None."""
    if not isinstance(summary, dict):
        return f"{kind(summary)}, not an object (not a Statuspage v2 summary)"
    if "components" not in summary:
        return "no components (not a Statuspage v2 summary)"
    for key, want in (("components", list), ("incidents", list),
                      ("scheduled_maintenances", list), ("status", dict), ("page", dict)):
        value = summary.get(key)
        if value is not None and not isinstance(value, want):
            return (f"{key} is {kind(value)}, not {'a list' if want is list else 'an object'} "
                    "(not a Statuspage v2 summary)")
    return None


def kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_components(summary: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    raw, junk = objects(summary.get("components"), MAX_COMPONENTS)
    components = []
    for c in raw:
        cid, name = text(c.get("id")), text(c.get("name"))
        if cid is None or name is None:
            junk += 1
            continue
        components.append({**c, "id": cid, "name": name, "group_id": text(c.get("group_id"))})
    if junk:
        notes.append(f"ignored {junk} component(s) without an id and a name")
    if isinstance(summary.get("components"), list) and len(summary["components"]) > MAX_COMPONENTS:
        notes.append(f"read the first {MAX_COMPONENTS} components only")
    return components


def touched(raw: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(id, name) of the components an incident names: its ``components``, else what its
    updates say they changed (``affected_components``: ``code`` is the component's id)."""
    found: dict[str, tuple[str | None, str]] = {}
    for c in objects(raw.get("components"), MAX_COMPONENTS)[0]:
        name = text(c.get("name"))
        if name:
            found.setdefault(name, (text(c.get("id")), name))
    for update in objects(raw.get("incident_updates"), MAX_EVENTS)[0]:
        for c in objects(update.get("affected_components"), MAX_COMPONENTS)[0]:
            name = text(c.get("name"))
            if name:
                found.setdefault(name, (text(c.get("code")), name))
    return list(found.values())


def read_event(raw: dict[str, Any], ours: dict[str, str], wanted: tuple[str, ...],
               maintenance: bool) -> Incident:
    names = touched(raw)
    affects = (any(cid in ours or matches(name, wanted) for cid, name in names)
               if names else None)
    updates = objects(raw.get("incident_updates"), MAX_EVENTS)[0]
    latest = next((b for b in (text(u.get("body"), 1000) for u in updates) if b), None)
    return Incident(
        name=text(raw.get("name")) or "(unnamed)", status=text(raw.get("status")) or "unknown",
        impact=text(raw.get("impact")) or ("maintenance" if maintenance else "none"),
        components=[name for _, name in names], shortlink=text(raw.get("shortlink")),
        latest_update=latest, affects_us=affects,
        since=text(raw.get("scheduled_for" if maintenance else "started_at"))
        or text(raw.get("created_at")), maintenance=maintenance)


def read_summary(url: str, summary: Any, wanted: tuple[str, ...],
                 seconds: float = 0.0) -> StatusResult:
    problem = shape_error(summary)
    if problem is not None:
        return StatusResult(url, False, seconds, error=problem, http_status=200)
    notes: list[str] = []
    components = read_components(summary, notes)
    ours = watched_ids(components, wanted)
    status = summary.get("status") or {}
    result = StatusResult(url, True, seconds, page=text((summary.get("page") or {}).get("name")),
                          indicator=text(status.get("indicator")),
                          description=text(status.get("description")),
                          watched=sorted(set(ours.values())), notes=notes)
    for c in components:
        state = text(c.get("status")) or "unknown"
        if c["id"] in ours and c.get("group") is not True and state not in OPERATIONAL:
            result.degraded[c["name"]] = state
    incidents, junk = objects(summary.get("incidents"), MAX_EVENTS)
    maintenances, more = objects(summary.get("scheduled_maintenances"), MAX_EVENTS)
    if junk + more:
        notes.append(f"ignored {junk + more} incident(s) or maintenance(s) that were not objects")
    for raw in incidents:
        if text(raw.get("status")) not in DONE:
            result.incidents.append(read_event(raw, ours, wanted, maintenance=False))
    for raw in maintenances:
        if text(raw.get("status")) in LIVE_MAINTENANCE:
            result.incidents.append(read_event(raw, ours, wanted, maintenance=True))
    return result


async def fetch_summary(client: httpx.AsyncClient, url: str, deadline: float = DEADLINE,
                        limit: int = MAX_BYTES) -> Fetched:
    return await get_json(client, url, deadline=deadline, limit=limit)


def status_result(fetched: Fetched, wanted: tuple[str, ...]) -> StatusResult:
    if not fetched.ok:
        return StatusResult(fetched.url, False, fetched.seconds, error=fetched.error,
                            http_status=fetched.status)
    return read_summary(fetched.url, fetched.data, wanted, fetched.seconds)


async def check_status(client: httpx.AsyncClient, url: str, wanted: tuple[str, ...],
                       deadline: float = DEADLINE) -> StatusResult:
    return status_result(await fetch_summary(client, url, deadline), wanted)
