"""The abuse detector: too many requests, 401s, failed challenges or failed sign-ins from one
address (or requests from one network) within a window → a timed ban (:mod:`gatehouse.edge.bans`).

Counting is per replica, in fixed windows of ``window_seconds``: with N replicas behind a
balancer a client is banned once it passes the threshold on any one of them, so set the
thresholds for one replica's share of the traffic. It keeps the hot path to a few dict
increments; the ban itself is made in the background and shared through the state layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gatehouse.config import DetectorSettings
from gatehouse.edge.bans import Bans
from gatehouse.edge.visitor import IPAddress, OffenseKind, Visitor, has_bearer
from gatehouse.state.base import StateError
from gatehouse.telemetry.metrics import Metrics

log = logging.getLogger("gatehouse.edge")
OFFENSES: dict[OffenseKind, str] = {"unauthorized": "401 answers",
                                    "challenge_failed": "failed challenges",
                                    "signin_failed": "failed sign-ins",
                                    "slow_client": "connections cut for sending too slowly"}


def carries_api_key(visitor: Visitor) -> bool:
    """An API call with a bearer key: the identity stage checks it (a 401 is an offence)."""
    return visitor.path.startswith("/v1/") and has_bearer(visitor.headers)


class Detector:
    def __init__(self, settings: DetectorSettings, bans: Bans, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.bans = bans
        self.metrics = metrics
        self.clock = clock
        self._window_end = 0.0
        self._counts: dict[str, int] = {}
        self._limits: dict[str, int] = {
            "unauthorized": settings.max_unauthorized,
            "challenge_failed": settings.max_challenge_failures,
            "signin_failed": settings.max_signin_failures,
            "slow_client": settings.max_slow_clients}
        self._banning: dict[str, asyncio.Task[None]] = {}

    def _bump(self, key: str) -> int:
        now = self.clock()
        if now >= self._window_end:  # a new window: forget the last one wholesale
            self._counts = {}
            self._window_end = now + self.settings.window_seconds
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    def seen(self, visitor: Visitor) -> bool:
        """Count one request of ``visitor`` (called for every request not blocked); True
        when this one tripped a ban (so it is refused too).

        API calls that carry a key are not counted: the key's quota governs their rate, and
        a wrong key is a 401 offence. Counting them would ban a busy customer's NAT address
        (a backend sending 200 req/s with a valid key) — the outage an edge must not cause."""
        if not self.settings.enabled or carries_api_key(visitor):
            return False
        s = self.settings
        address = str(visitor.ip)
        tripped = False
        if self._bump(address) == s.max_requests_per_address + 1:
            tripped = self._trip(address, "requests", f"more than {s.max_requests_per_address} "
                                                      f"requests in {s.window_seconds:g} s")
        if self._bump(visitor.network) == s.max_requests_per_network + 1:
            tripped = self._trip(visitor.network, "network",
                                 f"more than {s.max_requests_per_network} requests from the "
                                 f"network in {s.window_seconds:g} s") or tripped
        return tripped

    def offense(self, visitor: Visitor, kind: OffenseKind) -> None:
        """Count a 401 (``unauthorized``), a failed challenge (``challenge_failed``) or a
        failed or throttled sign-in (``signin_failed``)."""
        self.offense_by(visitor.ip, kind)

    def offense_by(self, ip: IPAddress, kind: OffenseKind) -> None:
        """Count an offence of an address: also a connection cut for being too slow
        (``slow_client``), which has no request to make a visitor of."""
        if not self.settings.enabled:
            return
        limit = self._limits[kind]
        address = str(ip)
        if self._bump(f"{kind}:{address}") == limit + 1:
            self._trip(address, kind, f"more than {limit} {OFFENSES[kind]} in "
                                      f"{self.settings.window_seconds:g} s")

    def _trip(self, subject: str, cause: str, reason: str) -> bool:
        if subject in self._banning:
            return False
        self.metrics.edge_bans.labels(cause).inc()
        self.bans.hold(subject, reason, self.settings.ban_seconds)  # from the very next request
        task = asyncio.get_running_loop().create_task(self._ban(subject, reason))
        self._banning[subject] = task
        return True

    async def _ban(self, subject: str, reason: str) -> None:
        try:
            await self.bans.ban(subject, reason)
        except StateError as exc:  # the mirror has it: this replica enforces it regardless
            log.warning("ban of %s not shared with other replicas: %s", subject, exc)
        finally:
            self._banning.pop(subject, None)

    async def aclose(self) -> None:
        for task in list(self._banning.values()):
            task.cancel()
