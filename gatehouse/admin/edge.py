"""/admin/v1/edge: firewall rules, bans and Ray events (same as ``gatehouse rules | bans |
rays``). Rule and ban changes reach every replica at once through the state layer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from gatehouse.admin.models import Body, Page, json_page, json_pages, seconds
from gatehouse.admin.models import errors as responses
from gatehouse.edge.bans import BAN_MAX, REASON_MAX, Ban, Bans
from gatehouse.edge.rays import RAY_PATTERN, RayLog
from gatehouse.edge.rulebook import RuleAdmin
from gatehouse.edge.rules import (
    ASN_MAX,
    DIFFICULTY,
    MAX_REGEX,
    NOTE_MAX,
    POSITION_MAX,
    RULE_NAME_MAX,
    Action,
    RuleError,
)
from gatehouse.errors import InvalidRequest, NotFound
from gatehouse.identity.service import IdentityService
from gatehouse.store.edge import EdgeRecords

Asn = Annotated[int, Field(ge=0, le=ASN_MAX)]


class RuleIn(Body):
    action: Action
    name: str | None = Field(None, max_length=RULE_NAME_MAX,
                             description="names it in metrics and rays")
    cidr: str | list[str] | None = None
    list_file: str | None = Field(None, alias="list",
                                  description="a text file of CIDRs on the gateway's disk, "
                                  "one a line (relative: to the config file's folder); it "
                                  "must exist and be readable")
    user_agent: str | None = Field(None, min_length=1, max_length=MAX_REGEX,
                                   description="regex (RE2 syntax) searched in User-Agent")
    path: str | None = Field(None, min_length=1, max_length=MAX_REGEX,
                             description="regex (RE2 syntax) searched in the path")
    country: str | list[str] | None = Field(None, description="ISO codes (needs geo_database)")
    asn: Asn | list[Asn] | None = None
    difficulty: int | None = Field(None, ge=DIFFICULTY[0], le=DIFFICULTY[1],
                                   description="challenge rules: leading zero bits")
    note: str = Field("", max_length=NOTE_MAX)
    position: int | None = Field(None, ge=0, le=POSITION_MAX, description="where among the "
                                 "stored rules; default (or past the end): last")


class RuleOut(BaseModel):
    id: str
    source: str = Field(description="config (gatehouse.toml, tried first) or store")
    position: int
    note: str
    created_at: int | None
    rule: dict[str, Any]

    @staticmethod
    def shaped(row: dict[str, Any]) -> dict[str, Any]:
        """A listing row in this model's JSON shape (times in whole seconds)."""
        return {**row, "created_at": seconds(row["created_at"])}

    @classmethod
    def of(cls, row: dict[str, Any]) -> RuleOut:
        return cls(**cls.shaped(row))


class BanIn(Body):
    subject: str = Field(description="an address (203.0.113.7) or a network (203.0.113.0/24)")
    seconds: float = Field(3600, gt=0, le=BAN_MAX)
    reason: str = Field("banned by an administrator", max_length=REASON_MAX)


class BanOut(BaseModel):
    subject: str
    reason: str
    until: int
    at: int
    strikes: int = Field(description="detector bans in a row (each doubles); 0: made by hand")

    @staticmethod
    def shaped(ban: Ban) -> dict[str, Any]:
        """A ban in this model's JSON shape (what a listing sends, made without the model)."""
        return {"subject": ban.subject, "reason": ban.reason, "until": round(ban.until),
                "at": round(ban.at), "strikes": ban.strikes}

    @classmethod
    def of(cls, ban: Ban) -> BanOut:
        return cls(**cls.shaped(ban))


class RayOut(BaseModel):
    ray: str
    at: int
    action: str
    ip: str
    network: str
    rule: str
    reason: str
    method: str
    path: str
    user_agent: str


def edge_router(identity: IdentityService, bans: Bans | None = None,
                rays: RayLog | None = None) -> APIRouter:
    """``bans`` and ``rays``: the running edge's, so its mirror and unwritten rays are used."""
    router = APIRouter(prefix="/edge", tags=["edge"])
    settings = identity.settings.edge
    records = EdgeRecords(identity.store)
    rules = RuleAdmin(settings, records, identity.state, identity.settings.base_dir)
    bans = bans or Bans(identity.state, settings.detector)

    @router.get("/rules", summary="List firewall rules", response_model=Page[RuleOut])
    async def list_rules() -> Response:
        """In the order they are tried (first match wins): the config file's, then these."""
        return await json_page(map(RuleOut.shaped, await rules.rows()))

    @router.post("/rules", status_code=201, summary="Add a firewall rule",
                 responses=responses(400))
    async def add_rule(body: RuleIn) -> RuleOut:
        spec = body.model_dump(exclude={"note", "position"}, exclude_none=True, by_alias=True)
        try:
            return RuleOut.of(await rules.add(spec, body.note, body.position))
        except RuleError as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None

    @router.delete("/rules/{rule_id}", summary="Remove a firewall rule",
                   responses=responses(404))
    async def remove_rule(rule_id: str) -> dict[str, Any]:
        if not await rules.remove(rule_id):
            raise NotFound(f"No stored rule {rule_id!r} (rules from gatehouse.toml are "
                           "changed there).")
        return {"id": rule_id, "deleted": True}

    @router.get("/bans", summary="List bans", response_model=Page[BanOut])
    async def list_bans() -> Response:
        return await json_pages(bans.pages(), BanOut.shaped)

    @router.post("/bans", status_code=201, summary="Ban an address or network",
                 responses=responses(400))
    async def add_ban(body: BanIn) -> BanOut:
        try:
            return BanOut.of(await bans.ban(body.subject, body.reason, body.seconds))
        except RuleError as exc:
            raise InvalidRequest(str(exc), param="subject") from None

    @router.delete("/bans/{subject:path}", summary="Lift a ban", responses=responses(400, 404))
    async def remove_ban(subject: str) -> dict[str, Any]:
        try:
            lifted = await bans.unban(subject)
        except RuleError as exc:
            raise InvalidRequest(str(exc), param="subject") from None
        if not lifted:
            raise NotFound(f"{subject} is not banned.")
        return {"subject": subject, "deleted": True}

    @router.get("/rays/{ray}", summary="Look up a Ray ID", responses=responses(400, 404))
    async def find_ray(ray: Annotated[str, Path(pattern=RAY_PATTERN,
                                                description="16 hexadecimal digits")]) -> RayOut:
        """What the edge did and why, for a Ray ID a blocked person quoted."""
        ray = ray.lower()
        found = await (rays.find(ray) if rays is not None else records.ray(ray))
        if found is None:
            raise NotFound(f"No Ray ID {ray} (events are kept for "
                           f"{settings.rays_keep_days:g} days).")
        return RayOut(**{**found, "at": int(found["at"])})

    return router
