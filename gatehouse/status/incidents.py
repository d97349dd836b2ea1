"""Incidents and scheduled maintenance: what operators open, update, resolve, acknowledge and
write postmortems for, and what the detector's changes turn into — one automatic incident at a
time, which says it is automatic, carries the measured figures, waits for an operator's
acknowledgement, and on resolve gets a drafted postmortem (start, end, duration, peak error
rate, components hit hardest and those not affected, example failed request ids).

Incident statuses: ``investigating → identified → monitoring → resolved`` (+ ``postmortem``
once one is published); maintenance: ``scheduled → in_progress → verifying → completed``,
moved by the clock between ``scheduled_for`` and ``scheduled_until`` unless an operator says
otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from gatehouse.status.components import (
    FAULTS,
    IMPACT_OF,
    IMPACTS,
    SEVERITY,
    STATES,
    Component,
    worst,
)
from gatehouse.status.detector import Change, Reading
from gatehouse.store.status import Incident, StatusRecords
from gatehouse.store.tables import StatusIncident, StatusIncidentUpdate

INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
MAINTENANCE_STATUSES = ("scheduled", "in_progress", "verifying", "completed")
DONE = frozenset({"resolved", "postmortem", "completed"})
AUTOMATIC = "Automatic:"


class IncidentError(Exception):
    """A request about incidents that cannot be done: ``kind`` is not_found, conflict or
    invalid; ``param`` names the field at fault."""

    def __init__(self, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.param = kind, message, param


def clock_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def minutes_words(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def maintenance_status(row: StatusIncident, now: float) -> str:
    """A maintenance's status now: the clock moves it unless an operator has."""
    if row.status in ("completed", "verifying") or row.scheduled_for is None:
        return row.status
    if row.scheduled_until is not None and now >= row.scheduled_until:
        return "completed"
    return "in_progress" if now >= row.scheduled_for else "scheduled"


class Incidents:
    def __init__(self, records: StatusRecords, components: Iterable[Component],
                 clock: Callable[[], float] = time.time) -> None:
        self.records = records
        self.components = {c.key: c for c in components}
        self.clock = clock
        # the open automatic incident as the last tick saw it, and the components an operator
        # resolved it for while they still failed: no new automatic incident for those until
        # they recover or get worse (component key → the severity it had then)
        self._open: str | None = None
        self._held: dict[str, int] = {}

    # -- checks -------------------------------------------------------------------------
    def _affected(self, changes: Mapping[str, str], before: Mapping[str, str]
                  ) -> list[dict[str, str]]:
        out = []
        for key, new in changes.items():
            c = self.components.get(key)
            if c is None:
                raise IncidentError("invalid", f"No component {key!r}: the components are "
                                    f"{', '.join(self.components)}.", "components")
            if new not in STATES:
                raise IncidentError("invalid", f"Unknown component status {new!r}: one of "
                                    f"{', '.join(STATES)}.", "components")
            out.append({"code": key, "name": c.name,
                        "old_status": before.get(key, "operational"), "new_status": new})
        return out

    async def get(self, incident_id: str, kind: str = "incident") -> Incident:
        found = await self.records.get(incident_id)
        if found is None or found.row.kind != kind:
            raise IncidentError("not_found", f"No {kind} {incident_id!r}.")
        return found

    @staticmethod
    def states_of(incident: Incident) -> dict[str, str]:
        """The components' states as the incident's updates last set them."""
        out: dict[str, str] = {}
        for u in reversed(incident.updates):  # oldest first
            for a in orjson.loads(u.affected):
                out[a["code"]] = a["new_status"]
        return out

    # -- operators ----------------------------------------------------------------------
    async def open(self, name: str, body: str, *, status: str = "investigating",
                   impact: str | None = None, components: Mapping[str, str] | None = None,
                   automatic: bool = False, figures: Mapping[str, Any] | None = None
                   ) -> Incident:
        if status not in INCIDENT_STATUSES or status == "resolved":
            raise IncidentError("invalid", "A new incident's status is investigating, "
                                "identified or monitoring.", "status")
        changes = dict(components or {})
        affected = self._affected(changes, {})
        impact = impact or IMPACT_OF.get(worst(changes.values()), "none")
        if impact not in IMPACTS:
            raise IncidentError("invalid", f"impact is one of {', '.join(IMPACTS)}.", "impact")
        now = self.clock()
        row = StatusIncident(
            id="", kind="incident", name=name, status=status, impact=impact,
            automatic=automatic, acknowledged_at=None, created_at=now, updated_at=now,
            started_at=(figures or {}).get("started_at", now),
            monitoring_at=now if status == "monitoring" else None, resolved_at=None,
            scheduled_for=None, scheduled_until=None,
            components=orjson.dumps(list(changes)).decode(),
            figures=orjson.dumps(dict(figures or {})).decode(), postmortem=None,
            postmortem_at=None)
        first = StatusIncidentUpdate(id="", incident_id="", status=status, body=body,
                                     affected=orjson.dumps(affected).decode(), created_at=now)
        return await self.records.create(row, first)

    async def update(self, incident_id: str, body: str, *, status: str | None = None,
                     impact: str | None = None, components: Mapping[str, str] | None = None,
                     name: str | None = None) -> Incident:
        found = await self.get(incident_id)
        row = found.row
        if row.status in DONE:
            raise IncidentError("conflict", f"Incident {incident_id} is resolved; open a new "
                                "one, or publish its postmortem.")
        status = status or row.status
        if status not in INCIDENT_STATUSES:
            raise IncidentError("invalid", f"status is one of {', '.join(INCIDENT_STATUSES)}.",
                                "status")
        if impact is not None and impact not in IMPACTS:
            raise IncidentError("invalid", f"impact is one of {', '.join(IMPACTS)}.", "impact")
        changes = dict(components or {})
        before = self.states_of(found)
        if status == "resolved":  # every component it touched is back
            changes = {k: "operational" for k in (*before, *changes)}
        affected = self._affected(changes, before)
        now = self.clock()
        touched = list(dict.fromkeys([*found.components, *changes]))
        row.components = orjson.dumps(touched).decode()
        row.status, row.updated_at = status, now
        if name:
            row.name = name
        if impact is not None:
            row.impact = impact
        elif changes and status != "resolved":
            new = IMPACT_OF.get(worst(changes.values()), "none")
            if IMPACTS.index(new) > IMPACTS.index(row.impact):
                row.impact = new
        if status == "monitoring" and row.monitoring_at is None:
            row.monitoring_at = now
        if status == "resolved":
            row.resolved_at = now
            row.postmortem = await self.draft_postmortem(found, now)
        update = StatusIncidentUpdate(id="", incident_id=row.id, status=status, body=body,
                                      affected=orjson.dumps(affected).decode(), created_at=now)
        await self.records.save(row, update)
        found.updates.insert(0, update)
        return found

    async def resolve(self, incident_id: str, body: str | None = None) -> Incident:
        return await self.update(incident_id, body or "This incident has been resolved.",
                                 status="resolved")

    async def acknowledge(self, incident_id: str) -> Incident:
        found = await self.get(incident_id)
        if found.row.acknowledged_at is None:
            found.row.acknowledged_at = self.clock()
            await self.records.save(found.row)
        return found

    async def publish_postmortem(self, incident_id: str, body: str | None = None) -> Incident:
        found = await self.get(incident_id)
        row = found.row
        if row.resolved_at is None:
            raise IncidentError("conflict", f"Incident {incident_id} is not resolved yet: "
                                "resolve it first, then publish its postmortem.")
        text = body or row.postmortem
        if not text:
            raise IncidentError("invalid", "Give the postmortem's text.", "body")
        now = self.clock()
        row.postmortem, row.postmortem_at, row.status, row.updated_at = text, now, \
            "postmortem", now
        await self.records.save(row)
        return found

    # -- maintenance --------------------------------------------------------------------
    async def schedule(self, name: str, body: str, start: float, end: float,
                       components: Iterable[str]) -> Incident:
        keys = list(dict.fromkeys(components))
        self._affected(dict.fromkeys(keys, "under_maintenance"), {})
        if end <= start:
            raise IncidentError("invalid", "A maintenance ends after it starts.",
                                "scheduled_until")
        now = self.clock()
        row = StatusIncident(
            id="", kind="maintenance", name=name, status="scheduled", impact="maintenance",
            automatic=False, acknowledged_at=now, created_at=now, updated_at=now,
            started_at=start, monitoring_at=None, resolved_at=None, scheduled_for=start,
            scheduled_until=end, components=orjson.dumps(keys).decode(), figures="{}",
            postmortem=None, postmortem_at=None)
        first = StatusIncidentUpdate(id="", incident_id="", status="scheduled", body=body,
                                     affected="[]", created_at=now)
        return await self.records.create(row, first)

    async def update_maintenance(self, maintenance_id: str, body: str,
                                 status: str | None = None) -> Incident:
        found = await self.get(maintenance_id, "maintenance")
        row = found.row
        now = self.clock()
        current = maintenance_status(row, now)
        if current == "completed":
            raise IncidentError("conflict", f"Maintenance {maintenance_id} is completed.")
        status = status or current
        if status not in MAINTENANCE_STATUSES:
            raise IncidentError("invalid", "status is one of "
                                f"{', '.join(MAINTENANCE_STATUSES)}.", "status")
        row.status, row.updated_at = status, now
        if status == "completed":
            row.resolved_at = now
            row.scheduled_until = min(row.scheduled_until or now, now)
        update = StatusIncidentUpdate(id="", incident_id=row.id, status=status, body=body,
                                      affected="[]", created_at=now)
        await self.records.save(row, update)
        found.updates.insert(0, update)
        return found

    # -- the detector -------------------------------------------------------------------
    def _name(self, key: str) -> str:
        c = self.components.get(key)
        return c.name if c else key

    def _said(self, key: str, reading: Reading, new: str) -> str:
        name = self._name(key)
        if new == "operational":
            return f"{name} is back to normal."
        if reading.rule == "latency" and reading.slow_share is not None:
            return (f"{name} is {new.replace('_', ' ')}: {reading.slow_share:.1%} of answers "
                    "were slower than its latency objective.")
        rate = reading.error_rate or 0.0
        return (f"{name} is {new.replace('_', ' ')}: {rate:.1%} of its requests failed "
                f"({reading.requests:,} requests in the last minutes).")

    async def apply(self, changes: list[Change], statuses: Mapping[str, str],
                    readings: Mapping[str, Reading], now: float) -> Incident | None:
        """The detector's changes as the automatic incident: opened, updated, resolved;
        its figures (peaks) kept up to date. The open automatic incident, if any."""
        found = await self.records.open_automatic()
        bad = {k: s for k, s in statuses.items() if SEVERITY.get(s, 0) > 0}
        if found is None and self._open is not None and bad:
            # resolved by an operator while components still fail: they have been told;
            # reopening on the next tick would undo their decision
            self._held.update({k: SEVERITY[s] for k, s in bad.items()})
        self._open = None if found is None else found.row.id
        self._held = {k: held for k, held in self._held.items()
                      if k in bad and SEVERITY[bad[k]] <= held}  # recovered or worse: let go
        if found is None:
            bad = {k: s for k, s in bad.items() if k not in self._held}
            if not bad:
                return None
            opening = [c for c in changes if c.component in bad]
            words = " ".join(self._said(c.component, c.reading, c.new) for c in opening)
            started = min(c.since for c in opening) if opening else now
            figures = self._figures({}, bad, readings, started)
            names = ", ".join(self._name(k) for k in bad)
            kind = "Slow responses" if all(readings[k].rule == "latency" for k in bad
                                           if k in readings) else "Elevated errors"
            opened = await self.open(
                f"{kind} on {names}", f"{AUTOMATIC} detected from the gateway's own "
                f"traffic. {words} An operator has been alerted to confirm.",
                components=bad, automatic=True, figures=figures)
            self._open = opened.row.id
            return opened
        figures = self._figures(found.figures, bad, readings, found.row.started_at)
        if not bad:
            found.row.figures = orjson.dumps(figures).decode()
            await self.records.save(found.row)
            peak = figures.get("peak_error_rate") or 0.0
            self._open = None  # resolved here, by the recovery: nothing to hold
            return await self.update(found.row.id, f"{AUTOMATIC} error rates and latency are "
                                     f"back within objectives (peak error rate {peak:.1%}).",
                                     status="resolved")
        moved = {c.component: c.new for c in changes}
        if moved:
            found.row.figures = orjson.dumps(figures).decode()
            words = " ".join(self._said(c.component, c.reading, c.new) for c in changes)
            return await self.update(found.row.id, f"{AUTOMATIC} {words}", components=moved)
        if figures != found.figures:
            found.row.figures = orjson.dumps(figures).decode()
            await self.records.save(found.row)
        return found

    @staticmethod
    def _figures(old: Mapping[str, Any], bad: Mapping[str, str],
                 readings: Mapping[str, Reading], started: float) -> dict[str, Any]:
        peaks: dict[str, float] = dict(old.get("peak_by_component") or {})
        for key in bad:
            r = readings.get(key)
            if r is not None and r.error_rate is not None:
                peaks[key] = round(max(peaks.get(key, 0.0), r.error_rate), 6)
        return {"started_at": old.get("started_at", started),
                "peak_error_rate": max(peaks.values(), default=None),
                "peak_by_component": peaks,
                "rules": sorted({*(old.get("rules") or []),
                                 *(r.rule for k in bad if (r := readings.get(k)) and r.rule)})}

    async def draft_postmortem(self, incident: Incident, end: float) -> str:
        row = incident.row
        figures = incident.figures
        start = float(figures.get("started_at", row.started_at))
        peaks: dict[str, float] = figures.get("peak_by_component") or {}
        hit = list(dict.fromkeys([*sorted(peaks, key=lambda k: -peaks[k]),
                                  *incident.components]))
        spared = [c.name for k, c in self.components.items() if k not in hit and c.shown]
        cells = [(c.component, c.model) for k, c in self.components.items() if k in hit]
        examples = await self.records.failed_requests(start, end, FAULTS, cells)
        peak = figures.get("peak_error_rate")
        lines = [
            f"Postmortem draft ({'automatic' if row.automatic else 'from the incident'}; "
            "edit before publishing): " + row.name,
            "",
            f"- Start: {clock_time(start)}",
            f"- End: {clock_time(end)}",
            f"- Duration: {minutes_words(end - start)}",
            f"- Peak error rate: {peak:.1%}" if peak is not None else
            "- Peak error rate: not measured (no automatic figures)",
            "- Hit hardest: " + (", ".join(
                f"{self._name(k)} (peak {peaks[k]:.1%})" if k in peaks else self._name(k)
                for k in hit) or "none recorded"),
            "- Not affected: " + (", ".join(spared) or "none"),
            "- Example failed requests: " + (", ".join(examples) or "none in the request log"),
            "",
            "What happened, why, and what we change: (to be written)",
        ]
        return "\n".join(lines)
