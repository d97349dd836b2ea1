"""Admin keys only: ``Authorization: Bearer <admin key>`` on every path but the docs.

Checked in front of the whole app rather than per route, so a stranger learns nothing — not
which paths exist (404) nor how a body is judged (400) — before showing an admin key. The
refusals read exactly as the identity stage's do."""

from __future__ import annotations

from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.admin.errors import render
from gatehouse.errors import GatehouseError, MissingApiKey, PermissionDenied
from gatehouse.identity.service import IdentityService
from gatehouse.identity.stage import MISSING_KEY, bearer_key, invalid_key
from gatehouse.store.accounts import KeyRecord

# for the OpenAPI document and the docs page's "Authorize" button; AdminAuth does the checking
bearer = HTTPBearer(auto_error=False, scheme_name="AdminKey",
                    description="An admin key: `gatehouse keys create --admin`, or "
                                "POST /admin/v1/keys with scope admin.")


async def admin_key(identity: IdentityService, header: str | None) -> KeyRecord:
    if header is None:
        raise MissingApiKey(MISSING_KEY)
    token, record = await bearer_key(identity.verifier, header)
    if record is None:
        raise invalid_key(token)
    if record.scope != "admin":
        raise PermissionDenied("This key cannot use the admin API; use an admin key.")
    return record


class AdminAuth:
    def __init__(self, app: ASGIApp, identity: IdentityService,
                 public: frozenset[str]) -> None:
        self.app = app
        self.identity = identity
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            return await self.app(scope, receive, send)
        try:
            record = await admin_key(self.identity,
                                     Headers(scope=scope).get("authorization"))
        except GatehouseError as exc:
            return await render(exc, scope)(scope, receive, send)
        state = scope.setdefault("state", {})
        state["admin_key_id"] = record.id  # who did it, for handlers that want to say so
        await self.app(scope, receive, send)
