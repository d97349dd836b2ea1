"""``/readyz``: can this replica do useful work?

Each backend is probed (``GET {base_url}/models``; any HTTP answer counts as reachable) at most
once every few seconds, so a load balancer polling it costs the backends nothing. The replica
is ready when its state is usable and at least one model has a reachable backend whose circuit
is not open; models that cannot be served make it ``degraded`` (still 200), because a dead
backend is dead for every replica and pulling them all out would also stop the healthy models.
Why a backend is unreachable goes to the log, not to the public answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gatehouse.upstream.backend import Backend
from gatehouse.upstream.router import Router

CACHE_SECONDS = 5.0
log = logging.getLogger("gatehouse.probes")


class Probes:
    def __init__(self, router: Router, backends: list[Backend],
                 storage: dict[str, tuple[str, Callable[[], Awaitable[bool]]]] | None = None
                 ) -> None:
        self.router = router
        self.backends = backends
        # "store" / "state" → (kind, ping): shared by every replica, so trouble there makes
        # this replica degraded, not unready (cached keys and sessions still serve)
        self.storage = storage or {}
        self._last: tuple[float, dict[str, str | None]] | None = None
        self._lock = asyncio.Lock()

    async def _probe_all(self) -> dict[str, str | None]:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < CACHE_SECONDS:
                return self._last[1]
            results = await asyncio.gather(*(b.probe() for b in self.backends))
            found = {b.name: r for b, r in zip(self.backends, results, strict=True)}
            before = self._last[1] if self._last else {}
            for name, why in found.items():
                if why is not None and before.get(name, None) != why:
                    log.warning("backend %s unreachable: %s", name, why)
            self._last = (now, found)
            return found

    async def check(self) -> tuple[bool, dict[str, Any]]:
        found = await self._probe_all()
        models: dict[str, Any] = {}
        for name, route in self.router.routes.items():
            usable = [t.backend.name for t in route.targets
                      if found.get(t.backend.name) is None and t.breaker.state != "open"]
            models[name] = {"ready": bool(usable), "backends": usable}
        servable = sum(1 for m in models.values() if m["ready"])
        ready = servable > 0
        storage: dict[str, Any] = {}
        for name, (kind, ping) in self.storage.items():
            try:
                ok = await asyncio.wait_for(ping(), 2.0)
            except Exception:
                ok = False
            storage[name] = {"kind": kind, "ok": ok}
        healthy = servable == len(models) and all(s["ok"] for s in storage.values())
        status = "not_ready" if not ready else "ready" if healthy else "degraded"
        backends = {name: {"reachable": why is None} for name, why in found.items()}
        return ready, {"status": status, **storage, "models": models, "backends": backends}
