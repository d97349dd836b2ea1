"""/admin/v1/incidents and /admin/v1/maintenances: the status page's incidents (open, update,
resolve, acknowledge, publish a postmortem) and scheduled maintenance — what ``gatehouse
incidents`` does. Every change is on the public page within ``[status] snapshot_seconds``
(at once on the worker that made it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from gatehouse.admin.models import Body, Page, seconds
from gatehouse.admin.models import errors as responses
from gatehouse.errors import Conflict, InvalidRequest, NotFound
from gatehouse.status.components import STATES
from gatehouse.status.incidents import IncidentError, maintenance_status
from gatehouse.status.service import StatusService
from gatehouse.store.status import Incident
from gatehouse.timestamps import LATEST

Status = Literal["investigating", "identified", "monitoring", "resolved"]
OpenStatus = Literal["investigating", "identified", "monitoring"]
Impact = Literal["none", "minor", "major", "critical"]
ComponentState = Literal["operational", "degraded_performance", "partial_outage",
                         "major_outage", "under_maintenance"]
Id = Annotated[str, Path(pattern=r"^[0-9a-z]{12}$", description="12 letters and digits.")]
TEXT = 4000
WHEN = "Unix seconds, at the latest 9999-12-31T23:59:59Z"
COMPONENTS = ("Components this changes: their key (GET /api/v2/components.json names "
              "them; `api`, `web`, `login`, a model) → new state, one of " +
              ", ".join(STATES) + ".")


class IncidentIn(Body):
    name: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=TEXT, description="the first update's text")
    status: OpenStatus = "investigating"
    impact: Impact | None = Field(None, description="default: from the components' states")
    components: dict[str, ComponentState] = Field(default_factory=dict, max_length=100,
                                                  description=COMPONENTS)


class UpdateIn(Body):
    body: str = Field(min_length=1, max_length=TEXT)
    status: Status | None = Field(None, description="default: unchanged")
    impact: Impact | None = None
    name: str | None = Field(None, min_length=1, max_length=200)
    components: dict[str, ComponentState] = Field(default_factory=dict, max_length=100,
                                                  description=COMPONENTS)


class ResolveIn(Body):
    body: str | None = Field(None, min_length=1, max_length=TEXT)


class PostmortemIn(Body):
    body: str | None = Field(None, min_length=1, max_length=8000,
                             description="default: the drafted postmortem, as it stands")


class MaintenanceIn(Body):
    name: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=TEXT)
    # bounded so the page can show them as ISO 8601 (a later one stopped its snapshots)
    scheduled_for: int = Field(ge=0, le=LATEST, description=WHEN)
    scheduled_until: int = Field(ge=0, le=LATEST, description=WHEN)
    components: list[str] = Field(min_length=1, max_length=100)


class MaintenanceUpdateIn(Body):
    body: str = Field(min_length=1, max_length=TEXT)
    status: Literal["scheduled", "in_progress", "verifying", "completed"] | None = None


class UpdateOut(BaseModel):
    id: str
    status: str
    body: str
    created_at: int
    affected_components: list[dict[str, str]]


class IncidentOut(BaseModel):
    id: str
    kind: str = Field(description="incident | maintenance")
    name: str
    status: str
    impact: str
    automatic: bool = Field(description="opened by the detector from live traffic")
    acknowledged_at: int | None = Field(description="when an operator confirmed it")
    created_at: int
    updated_at: int
    started_at: int
    resolved_at: int | None
    scheduled_for: int | None
    scheduled_until: int | None
    components: list[str]
    figures: dict[str, Any] = Field(description="what the detector measured: started_at, "
                                    "peak_error_rate, peak_by_component, rules")
    postmortem: str | None = Field(description="the draft until published, then the text")
    postmortem_published_at: int | None
    updates: list[UpdateOut]

    @classmethod
    def of(cls, found: Incident, now: float) -> IncidentOut:
        r = found.row
        status = maintenance_status(r, now) if r.kind == "maintenance" else r.status
        return cls(
            id=r.id, kind=r.kind, name=r.name, status=status, impact=r.impact,
            automatic=r.automatic, acknowledged_at=seconds(r.acknowledged_at),
            created_at=int(r.created_at), updated_at=int(r.updated_at),
            started_at=int(r.started_at), resolved_at=seconds(r.resolved_at),
            scheduled_for=seconds(r.scheduled_for), scheduled_until=seconds(r.scheduled_until),
            components=found.components, figures=found.figures, postmortem=r.postmortem,
            postmortem_published_at=seconds(r.postmortem_at),
            updates=[UpdateOut(id=u.id, status=u.status, body=u.body,
                               created_at=int(u.created_at),
                               affected_components=orjson.loads(u.affected))
                     for u in found.updates])


@contextlib.contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except IncidentError as exc:
        if exc.kind == "not_found":
            raise NotFound(exc.message, param="id") from None
        if exc.kind == "conflict":
            raise Conflict(exc.message) from None
        raise InvalidRequest(exc.message, param=exc.param) from None


def incidents_router(status: StatusService) -> APIRouter:
    router = APIRouter(tags=["status"])
    incidents = status.incidents

    async def shown(found: Incident) -> IncidentOut:
        with contextlib.suppress(Exception):  # the page follows at once on this worker
            await status.refresh()
        return IncidentOut.of(found, incidents.clock())

    @router.get("/incidents", summary="List incidents")
    async def list_incidents(
        live: Annotated[bool, Query(description="Only those not resolved.")] = False,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page[IncidentOut]:
        found = await status.records.listing(kind="incident", live_only=live, limit=limit)
        return Page(data=[IncidentOut.of(i, incidents.clock()) for i in found])

    @router.post("/incidents", status_code=201, summary="Open an incident",
                 responses=responses(400))
    async def open_incident(body: IncidentIn) -> IncidentOut:
        with translated():
            return await shown(await incidents.open(
                body.name, body.body, status=body.status, impact=body.impact,
                components=body.components))

    @router.get("/incidents/{incident_id}", summary="Show an incident",
                responses=responses(404))
    async def get_incident(incident_id: Id) -> IncidentOut:
        with translated():
            return IncidentOut.of(await incidents.get(incident_id), incidents.clock())

    @router.post("/incidents/{incident_id}/updates", status_code=201,
                 summary="Post an update", responses=responses(400, 404, 409))
    async def update_incident(incident_id: Id, body: UpdateIn) -> IncidentOut:
        with translated():
            return await shown(await incidents.update(
                incident_id, body.body, status=body.status, impact=body.impact,
                components=body.components, name=body.name))

    @router.post("/incidents/{incident_id}/resolve", summary="Resolve an incident",
                 responses=responses(404, 409))
    async def resolve_incident(incident_id: Id, body: ResolveIn | None = None
                               ) -> IncidentOut:
        """Every component it touched goes back to operational; a postmortem is drafted
        (start, end, duration, peak error rate, components hit and spared, failed request
        ids) for `POST …/postmortem` to publish."""
        with translated():
            return await shown(await incidents.resolve(incident_id,
                                                       body.body if body else None))

    @router.post("/incidents/{incident_id}/ack", summary="Acknowledge an incident",
                 responses=responses(404))
    async def ack_incident(incident_id: Id) -> IncidentOut:
        """An operator confirms an automatic incident (idempotent)."""
        with translated():
            return await shown(await incidents.acknowledge(incident_id))

    @router.post("/incidents/{incident_id}/postmortem", summary="Publish the postmortem",
                 responses=responses(400, 404, 409))
    async def publish_postmortem(incident_id: Id, body: PostmortemIn | None = None
                                 ) -> IncidentOut:
        with translated():
            return await shown(await incidents.publish_postmortem(
                incident_id, body.body if body else None))

    @router.get("/maintenances", summary="List scheduled maintenance")
    async def list_maintenances(
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page[IncidentOut]:
        found = await status.records.listing(kind="maintenance", limit=limit)
        return Page(data=[IncidentOut.of(i, incidents.clock()) for i in found])

    @router.post("/maintenances", status_code=201, summary="Schedule maintenance",
                 responses=responses(400))
    async def schedule(body: MaintenanceIn) -> IncidentOut:
        """While it runs its components show `under_maintenance` and the detector opens no
        incident for them (their failures then are left out of its windows)."""
        with translated():
            return await shown(await incidents.schedule(
                body.name, body.body, body.scheduled_for, body.scheduled_until,
                body.components))

    @router.post("/maintenances/{maintenance_id}/updates", status_code=201,
                 summary="Post a maintenance update", responses=responses(400, 404, 409))
    async def update_maintenance(maintenance_id: Id, body: MaintenanceUpdateIn
                                 ) -> IncidentOut:
        with translated():
            return await shown(await incidents.update_maintenance(
                maintenance_id, body.body, body.status))

    return router
