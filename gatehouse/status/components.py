"""The status page's components — api, web, login, one per model (in the group "Models"), and
whatever ``[status.components.NAME]`` adds or changes — their states, and the page's indicator
in Statuspage's words.

A component is judged on the rollup cells it names: the record's ``component`` (api, web,
login, admin) and/or its ``model``; unset fields match every cell."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gatehouse.config import Settings, StatusComponentSettings

STATES = ("operational", "degraded_performance", "partial_outage", "major_outage",
          "under_maintenance")
SEVERITY = {"operational": 0, "under_maintenance": 0, "degraded_performance": 1,
            "partial_outage": 2, "major_outage": 3}
# a component's state → the page indicator it calls for (Statuspage's top-level status)
INDICATOR_OF = {"operational": "none", "degraded_performance": "minor",
                "partial_outage": "major", "major_outage": "critical",
                "under_maintenance": "maintenance"}
INDICATORS = ("none", "minor", "major", "critical", "maintenance")
DESCRIPTIONS = {"none": "All Systems Operational", "minor": "Partially Degraded Service",
                "major": "Partial System Outage", "critical": "Major System Outage",
                "maintenance": "Service Under Maintenance"}
IMPACT_OF = {"degraded_performance": "minor", "partial_outage": "major",
             "major_outage": "critical"}
IMPACTS = ("none", "minor", "major", "critical")
# the error classes that are the service's fault (telemetry/record.py): not 4xx, not quota or
# rate limits (the caller's), not client_gone (the caller left)
FAULTS = frozenset({"server_error", "unavailable", "at_capacity", "timeout"})
NOT_JUDGED = frozenset({"client_gone"})  # neither good nor bad: left out of the count
MODELS_GROUP = "Models"
DEFAULT_DESCRIPTIONS = {
    "api": "The OpenAI-compatible API (/v1): every model.",
    "web": "The web pages.",
    "login": "Signing in and out.",
}


@dataclass(frozen=True, slots=True)
class Component:
    key: str  # its name in gatehouse.toml, and its id
    name: str
    description: str | None
    group: str | None
    component: str | None
    model: str | None
    availability: float
    latency_ms: float
    latency_objective: float
    shown: bool
    only_show_if_degraded: bool
    position: int

    def matches(self, component: str, model: str) -> bool:
        return ((self.component is None or self.component == component)
                and (self.model is None or self.model == model))


def _defaults(settings: Settings) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {
        "api": {"name": "API", "component": "api"},
        "web": {"name": "Web", "component": "web"},
        "login": {"name": "Login", "component": "login"},
    }
    models = [*settings.models, *([settings.demo.model] if settings.demo.enabled else [])]
    for model in models:
        out.setdefault(model, {"name": model, "component": "api", "model": model,
                               "group": MODELS_GROUP,
                               "description": f"Requests for the model {model}."})
    return out


def components_of(settings: Settings) -> list[Component]:
    """Every component, in page order: the defaults with ``[status.components]`` over them."""
    tables = _defaults(settings)
    for key, given in settings.status.components.items():
        tables[key] = {**tables.get(key, {}), **given.model_dump(exclude_unset=True)}
    out = []
    for i, (key, table) in enumerate(tables.items()):
        s = StatusComponentSettings.model_validate(table)
        out.append(Component(
            key=key, name=s.name or key,
            description=s.description or DEFAULT_DESCRIPTIONS.get(key), group=s.group,
            component=s.component, model=s.model, availability=s.availability,
            latency_ms=s.latency_ms, latency_objective=s.latency_objective, shown=s.shown,
            only_show_if_degraded=s.only_show_if_degraded,
            position=s.position if s.position is not None else i + 1))
    return sorted(out, key=lambda c: (c.position, c.key))


def worst(states: Iterable[str]) -> str:
    """The most severe state (maintenance only when nothing is worse than it)."""
    found = list(states)
    top = max(found, key=lambda s: SEVERITY.get(s, 0), default="operational")
    if SEVERITY.get(top, 0) == 0 and "under_maintenance" in found:
        return "under_maintenance"
    return top


def indicator(states: Iterable[str]) -> tuple[str, str]:
    """The page's ``(indicator, description)`` from its components' states."""
    name = INDICATOR_OF[worst(states)]
    return name, DESCRIPTIONS[name]
