"""``/readyz``: is every model servable? Each backend is probed (any HTTP answer counts as
reachable) at most once every few seconds, so a load balancer polling it costs the backends
nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gatehouse.upstream.backend import Backend
from gatehouse.upstream.router import Router

CACHE_SECONDS = 5.0


class Probes:
    def __init__(self, router: Router, backends: list[Backend]) -> None:
        self.router = router
        self.backends = backends
        self._last: tuple[float, dict[str, str | None]] | None = None
        self._lock = asyncio.Lock()

    async def _probe_all(self) -> dict[str, str | None]:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < CACHE_SECONDS:
                return self._last[1]
            results = await asyncio.gather(*(b.probe() for b in self.backends))
            found = {b.name: r for b, r in zip(self.backends, results, strict=True)}
            self._last = (now, found)
            return found

    async def check(self) -> tuple[bool, dict[str, Any]]:
        found = await self._probe_all()
        models: dict[str, Any] = {}
        ready = True
        for name, route in self.router.routes.items():
            usable = [t.backend.name for t in route.targets
                      if found.get(t.backend.name) is None and t.breaker.state != "open"]
            models[name] = {"ready": bool(usable), "backends": usable}
            ready = ready and bool(usable)
        backends = {name: {"reachable": why is None, **({"error": why} if why else {})}
                    for name, why in found.items()}
        return ready, {"status": "ready" if ready else "not_ready",
                       "state": {"kind": "memory", "ok": True},
                       "models": models, "backends": backends}
