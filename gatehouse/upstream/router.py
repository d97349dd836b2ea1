"""Which backends serve a model, and in what order to try them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from gatehouse.upstream.backend import Backend
from gatehouse.upstream.breaker import CircuitBreaker
from gatehouse.upstream.slots import BackendSlots


@dataclass(slots=True)
class Target:
    backend: Backend
    breaker: CircuitBreaker
    model: str  # the name the backend knows the model by
    weight: float
    inject_stream_usage: bool = True
    slots: BackendSlots | None = None  # the upstream's max_concurrency, shared by its models
    api: str = "chat"  # "chat": Responses requests are translated; "responses": passed on


@dataclass(slots=True)
class ModelRoute:
    name: str
    targets: Sequence[Target]
    owned_by: str
    created: int


class Router:
    def __init__(self, routes: dict[str, ModelRoute], rng: random.Random | None = None) -> None:
        self.routes = routes
        self.random = rng or random.Random()

    def exists(self, model: str) -> bool:
        return model in self.routes

    def order(self, model: str) -> list[Target]:
        """All targets, as a weighted random shuffle: the first is picked with probability
        weight/sum; each later one likewise among those left (Efraimidis–Spirakis keys)."""
        targets = self.routes[model].targets
        if len(targets) == 1:
            return [targets[0]]
        r = self.random.random
        return sorted(targets, key=lambda t: r() ** (1.0 / t.weight), reverse=True)
