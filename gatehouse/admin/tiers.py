"""GET /admin/v1/tiers, and the rule every write that names a tier follows: the tier exists,
and is of the right kind (orgs and keys take api tiers, users web tiers) — as the CLI."""

from __future__ import annotations

from fastapi import APIRouter

from gatehouse.admin.models import Page, TierOut
from gatehouse.config import Settings
from gatehouse.errors import InvalidRequest


def check_tier(settings: Settings, tier: str, kind: str) -> str:
    problem = settings.tier_problem(tier, kind)
    if problem:
        raise InvalidRequest(f"{problem[0].upper()}{problem[1:]} (see GET /admin/v1/tiers).",
                             param="tier")
    return tier


def tiers_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["tiers"])

    @router.get("/tiers", summary="List tiers")
    async def list_tiers() -> Page[TierOut]:
        """The tiers defined in gatehouse.toml: their kind (api or web), which other tiers a
        request may ask for with `service_tier`, and a description."""
        return Page(data=[TierOut(name=name, kind="web" if t.kind == "web" else "api",
                                  may_request=list(t.may_request), description=t.description)
                          for name, t in settings.tiers.items()])

    return router
