"""/admin/v1/users: people who sign in to the web path. Passwords go in, never out; disabling
a user or setting a new password signs them out everywhere."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from gatehouse.admin.errors import about
from gatehouse.admin.models import (
    LoggedOut,
    Page,
    Unlocked,
    UserIn,
    UserOut,
    UserPatch,
    UserUpdated,
    json_pages,
)
from gatehouse.admin.models import errors as responses
from gatehouse.admin.tiers import check_tier
from gatehouse.errors import InvalidRequest
from gatehouse.identity.passwords import hash_password
from gatehouse.identity.service import IdentityService
from gatehouse.store.accounts import AccountError


async def hashed(password: str) -> str:
    try:
        # argon2 takes tens of milliseconds by design: off the event loop
        return await asyncio.to_thread(hash_password, password)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid 'password': {exc}.", param="password") from None


def users_router(identity: IdentityService) -> APIRouter:
    router = APIRouter(tags=["users"])
    accounts = identity.accounts

    async def org_name(org_id: str | None) -> str | None:
        if org_id is None:
            return None
        return await accounts.org_name(org_id)

    @router.get("/users", summary="List users", response_model=Page[UserOut])
    async def list_users() -> Response:
        return await json_pages(await accounts.user_pages(), UserOut.shaped)

    @router.post("/users", status_code=201, summary="Create a user",
                 responses=responses(404, 409))
    async def create_user(body: UserIn) -> UserOut:
        tier = check_tier(identity.settings, body.tier, "web")
        password = await hashed(body.password)
        with about("email"):
            user = await accounts.create_user(body.email, password, body.org or None, tier)
        return UserOut.of(user, body.org or None)

    @router.patch("/users/{email}", summary="Change a user", responses=responses(404))
    async def update_user(email: str, body: UserPatch) -> UserUpdated:
        """Set any of `tier`, `disabled` and `password`; fields left out stay as they are."""
        tier = None if body.tier is None else check_tier(identity.settings, body.tier, "web")
        password = None if body.password is None else await hashed(body.password)
        user = await accounts.update_user(email, password_hash=password, tier=tier,
                                          disabled=body.disabled)
        ended = 0
        if body.disabled or password is not None:
            ended = await identity.sessions.end_all(
                user.id, "account_disabled" if body.disabled else "signed_out_by_admin")
        return UserUpdated(**UserOut.of(user, await org_name(user.org_id)).model_dump(),
                           sessions_ended=ended)

    @router.post("/users/{email}/logout", summary="Sign a user out everywhere",
                 responses=responses(404))
    async def logout(email: str) -> LoggedOut:
        user = await accounts.user_by_email(email)
        if user is None:
            raise AccountError("not_found", f"no user {email!r}")
        ended = await identity.sessions.end_all(user.id, "signed_out_by_admin")
        return LoggedOut(email=user.email, sessions_ended=ended)

    @router.post("/users/{email}/unlock", summary="Lift a sign-in lock")
    async def unlock(email: str) -> Unlocked:
        """Forget the failed sign-ins counted for this email (whether or not a user has it:
        locks look the same for unknown emails)."""
        cleared = await identity.throttle.unlock(email)
        return Unlocked(email=email, unlocked=cleared > 0)

    return router
