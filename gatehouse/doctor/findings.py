"""Everything one run of the doctor found, and what the user told it."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatehouse.doctor.api import ApiResult
from gatehouse.doctor.har import HarSummary
from gatehouse.doctor.health import HealthResult
from gatehouse.doctor.lookup import Lookup
from gatehouse.doctor.network import Environment, HostResult
from gatehouse.doctor.profiles import Profile
from gatehouse.doctor.statuspage import StatusResult
from gatehouse.doctor.web import WebResult


@dataclass(slots=True)
class Answers:
    """What a program cannot test: ``None`` when the user was not asked or did not say."""

    private_window: bool | None = None   # tried an incognito window / clean profile?
    other_network: bool | None = None    # tried another network (mobile data, no VPN)?
    conversation_url: str | None = None


@dataclass(slots=True)
class Findings:
    profile: Profile
    url: str
    environment: Environment
    answers: Answers = field(default_factory=Answers)
    status: StatusResult | None = None
    hosts: list[HostResult] = field(default_factory=list)
    api: ApiResult | None = None
    web: WebResult | None = None
    har: HarSummary | None = None
    health: HealthResult | None = None        # the caller's org, last 5 minutes
    model_health: HealthResult | None = None  # … for the model being diagnosed
    lookups: list[Lookup] = field(default_factory=list)
    traffic_unread: str | None = None  # why health and lookups were not read at all
