"""Admin keys only: ``Authorization: Bearer <admin key>`` on every path but the docs.

Checked in front of the whole app rather than per route, so a stranger learns nothing — not
which paths exist (404) nor how a body is judged (400) — before showing an admin key. The
refusals read exactly as the identity stage's do."""

from __future__ import annotations

from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.admin.errors import render
from gatehouse.errors import (GatehouseError, IdentityUnavailable, InvalidApiKey, MissingApiKey,
                              PermissionDenied)
from gatehouse.identity.service import IdentityService
from gatehouse.identity.stage import MISSING_KEY, mask
from gatehouse.identity.verifier import StoreUnavailable
from gatehouse.store.accounts import KeyRecord

# for the OpenAPI document and the docs page's "Authorize" button; AdminAuth does the checking
bearer = HTTPBearer(auto_error=False, scheme_name="AdminKey",
                    description="An admin key: `gatehouse keys create --admin`, or "
                                "POST /admin/v1/keys with scope admin.")


async def admin_key(identity: IdentityService, header: str | None) -> KeyRecord:
    if header is None:
        raise MissingApiKey(MISSING_KEY)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidApiKey("The Authorization header must read 'Bearer YOUR_KEY'.")
    try:
        record = await identity.verifier.verify(token)
    except StoreUnavailable:
        raise IdentityUnavailable("The account store cannot be reached right now.",
                                  retry_after=5) from None
    if record is None:
        raise InvalidApiKey(f"Incorrect API key provided: {mask(token)}. Check that the whole "
                            "key was copied, or ask your administrator for a new one.")
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
