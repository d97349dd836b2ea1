"""Per-backend concurrency: at most ``limit`` calls in flight to one upstream (all models
together, per replica). A full backend is skipped like an open circuit — the next backend is
tried — and when every backend of a model is full the request is refused 503 ``at_capacity``.
"""

from __future__ import annotations


class BackendSlots:
    __slots__ = ("inflight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    def take(self) -> bool:
        if self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def give(self) -> None:
        self.inflight -= 1
