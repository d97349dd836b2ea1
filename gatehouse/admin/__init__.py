"""The admin API (/admin/v1/): orgs, projects, keys, users and tiers over HTTP.

The gateway mounts :class:`LazyAdmin`: the FastAPI app (and FastAPI itself, ~13 MB per worker)
is built on the first request under /admin/, in a thread, not in every worker at start — or at
start with ``[server] admin_at_start``: the build is ~0.5 s of Python, imports and pydantic's
schemas, some of it in calls that hold the GIL for tens of milliseconds, and the worker's other
requests wait meanwhile. The thread hands the GIL back every 0.5 ms (gatehouse/turns.py): at
500 req/s the p99 of the cell it happens in is ~5 ms, the longest answer ~20 ms (was 65-116 and
160-215 ms handing it over every 5 ms)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.heap import freeze_long_lived
from gatehouse.turns import to_thread_in_turns

if TYPE_CHECKING:
    from gatehouse.admin.api import build_admin_app
    from gatehouse.edge.screen import Edge
    from gatehouse.identity.service import IdentityService
    from gatehouse.status.service import StatusService
    from gatehouse.telemetry.requestlog import RequestLog

class LazyAdmin:
    def __init__(self, identity: IdentityService, edge: Edge | None = None,
                 request_log: RequestLog | None = None,
                 status: StatusService | None = None) -> None:
        self._parts = (identity, edge, request_log, status)
        self._app: ASGIApp | None = None
        self._lock: asyncio.Lock | None = None

    def build(self) -> ASGIApp:
        from gatehouse.admin.api import build_admin_app

        return build_admin_app(*self._parts)

    async def build_now(self) -> None:
        """Build the app at once (a worker's start, before it serves)."""
        if self._app is None:
            self._app = self.build()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._app is None:
                    # in a thread that gives the GIL back to the loop every 0.5 ms, not 5
                    self._app = await to_thread_in_turns(self.build)
                    freeze_long_lived()  # the app lives as long as the worker
        await self._app(scope, receive, send)


__all__ = ["LazyAdmin", "build_admin_app"]


def __getattr__(name: str) -> Any:
    if name == "build_admin_app":  # the app itself, built now (tests, tools)
        from gatehouse.admin.api import build_admin_app

        return build_admin_app
    raise AttributeError(name)
