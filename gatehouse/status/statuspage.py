"""The public status documents in Atlassian Statuspage's v2 format — field names and enums as
Statuspage's own ``/api/v2/*.json`` — so every tool that reads a Statuspage reads ours:
``summary.json``, ``status.json``, ``components.json``, ``incidents.json``,
``incidents/unresolved.json``, ``scheduled-maintenances.json`` and its ``upcoming.json`` and
``active.json``. Built from a :class:`View` (what the store said at one moment), pure."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatehouse.status.components import (
    DESCRIPTIONS,
    INDICATOR_OF,
    INDICATORS,
    Component,
    worst,
)
from gatehouse.status.incidents import DONE, Incidents, maintenance_status
from gatehouse.store.status import ALPHABET, Incident
from gatehouse.timestamps import utc

LISTED = 50  # incidents and maintenances in incidents.json and scheduled-maintenances.json
PREFIX = "/api/v2/"
DOCUMENTS = ("summary.json", "status.json", "components.json", "incidents.json",
             "incidents/unresolved.json", "scheduled-maintenances.json",
             "scheduled-maintenances/upcoming.json", "scheduled-maintenances/active.json")


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return utc(at).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stable_id(*parts: str) -> str:
    """12 letters and digits derived from ``parts``: the same on every replica and restart."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:12])


@dataclass(slots=True)
class View:
    """What the store said at ``now``: the detector's component states, the incidents and
    maintenances (newest first)."""

    now: float
    page_name: str
    url: str
    components: list[Component]
    detected: Mapping[str, str]
    incidents: list[Incident] = field(default_factory=list)
    started: float = 0.0  # when this replica began (components' created_at)

    @property
    def page_id(self) -> str:
        return stable_id("page", self.page_name)

    def component_id(self, key: str) -> str:
        return stable_id("component", self.page_name, key)

    def live_maintenance(self) -> list[Incident]:
        return [m for m in self.incidents if m.row.kind == "maintenance"
                and maintenance_status(m.row, self.now) in ("in_progress", "verifying")]

    def states(self) -> dict[str, str]:
        """Each component's state: the detector's, a live incident's (as its updates set
        it), under_maintenance during a live maintenance — the worst of them."""
        found: dict[str, list[str]] = {c.key: [self.detected.get(c.key, "operational")]
                                       for c in self.components}
        for i in self.incidents:
            if i.row.kind == "incident" and i.row.status not in DONE and not i.row.automatic:
                for key, state in Incidents.states_of(i).items():
                    found.setdefault(key, []).append(state)
        for m in self.live_maintenance():
            for key in m.components:
                found.setdefault(key, []).append("under_maintenance")
        return {c.key: worst(found[c.key]) for c in self.components}


def _status(view: View, states: Mapping[str, str]) -> dict[str, str]:
    shown = [states[c.key] for c in view.components if c.shown]
    name = INDICATOR_OF[worst(shown)]
    for i in view.incidents:  # a live incident's impact counts too (as on Statuspage)
        if i.row.kind == "incident" and i.row.status not in DONE and \
                INDICATORS.index(i.row.impact) > INDICATORS.index(name) and \
                name != "maintenance":
            name = i.row.impact
    return {"indicator": name, "description": DESCRIPTIONS[name]}


def _components(view: View, states: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    created = iso(view.started)
    for c in view.components:
        if not c.shown:
            continue
        group_id = None
        if c.group:
            group = groups.get(c.group)
            if group is None:
                group = groups[c.group] = {
                    "id": stable_id("group", view.page_name, c.group), "name": c.group,
                    "status": "operational", "created_at": created, "updated_at": created,
                    "position": c.position, "description": None, "showcase": False,
                    "start_date": None, "group_id": None, "page_id": view.page_id,
                    "group": True, "only_show_if_degraded": False, "components": []}
                out.append(group)
            group_id = group["id"]
            group["components"].append(view.component_id(c.key))
            group["status"] = worst([group["status"], states[c.key]])
        out.append({
            "id": view.component_id(c.key), "name": c.name, "status": states[c.key],
            "created_at": created, "updated_at": iso(view.now), "position": c.position,
            "description": c.description, "showcase": True, "start_date": None,
            "group_id": group_id, "page_id": view.page_id, "group": False,
            "only_show_if_degraded": c.only_show_if_degraded})
    return out


def _incident(view: View, i: Incident, states: Mapping[str, str]) -> dict[str, Any]:
    row = i.row
    by_key = {c.key: c for c in view.components}
    status = maintenance_status(row, view.now) if row.kind == "maintenance" else row.status
    out: dict[str, Any] = {
        "id": row.id, "name": row.name, "status": status, "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at), "monitoring_at": iso(row.monitoring_at),
        "resolved_at": iso(row.resolved_at), "impact": row.impact,
        "shortlink": f"{view.url}/status#{row.id}", "started_at": iso(row.started_at),
        "page_id": view.page_id,
        "incident_updates": [{
            "id": u.id, "status": u.status, "body": u.body, "incident_id": row.id,
            "created_at": iso(u.created_at), "updated_at": iso(u.created_at),
            "display_at": iso(u.created_at),
            "affected_components": orjson.loads(u.affected) or None,
            "deliver_notifications": True, "custom_tweet": None, "tweet_id": None,
        } for u in i.updates],
        "components": [{
            "id": view.component_id(key), "name": by_key[key].name,
            "status": states.get(key, "operational"), "created_at": iso(view.started),
            "updated_at": iso(view.now), "position": by_key[key].position,
            "description": by_key[key].description, "showcase": True, "start_date": None,
            "group_id": None, "page_id": view.page_id, "group": False,
            "only_show_if_degraded": by_key[key].only_show_if_degraded,
        } for key in i.components if key in by_key],
    }
    if row.kind == "maintenance":
        out["scheduled_for"] = iso(row.scheduled_for)
        out["scheduled_until"] = iso(row.scheduled_until)
    return out


def documents(view: View) -> dict[str, dict[str, Any]]:
    """Every document, by its path under /api/v2/."""
    states = view.states()
    page = {"id": view.page_id, "name": view.page_name, "url": view.url,
            "time_zone": "Etc/UTC", "updated_at": iso(max(
                [view.started, *(i.row.updated_at for i in view.incidents)]))}
    incidents = [i for i in view.incidents if i.row.kind == "incident"]
    maintenances = [m for m in view.incidents if m.row.kind == "maintenance"]

    def dump(items: Iterable[Incident]) -> list[dict[str, Any]]:
        return [_incident(view, i, states) for i in items]

    unresolved = dump(i for i in incidents if i.row.status not in DONE)
    upcoming = dump(m for m in maintenances if maintenance_status(m.row, view.now) ==
                    "scheduled")
    active = dump(view.live_maintenance())
    components = _components(view, states)
    status = _status(view, states)
    return {
        "summary.json": {"page": page, "components": components, "incidents": unresolved,
                         "scheduled_maintenances": active + upcoming, "status": status},
        "status.json": {"page": page, "status": status},
        "components.json": {"page": page, "components": components},
        "incidents.json": {"page": page, "incidents": dump(incidents[:LISTED])},
        "incidents/unresolved.json": {"page": page, "incidents": unresolved},
        "scheduled-maintenances.json": {"page": page,
                                        "scheduled_maintenances": dump(maintenances[:LISTED])},
        "scheduled-maintenances/upcoming.json": {"page": page,
                                                 "scheduled_maintenances": upcoming},
        "scheduled-maintenances/active.json": {"page": page, "scheduled_maintenances": active},
    }
