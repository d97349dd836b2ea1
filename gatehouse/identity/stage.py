"""The identity stage: turns each request into a :class:`Principal`, or answers 401/403.

A request is identified by, in order: an ``Authorization: Bearer`` API key; a web session
cookie; or — only when ``[identity] require_key = false`` — nobody (the anonymous tier).
Nobody where a key is required is 401 ``missing_api_key`` under ``/v1``, and
``session_expired`` on the web chat's route.
The service tier a request asks for (``service_tier``) is settled after the body is read, by
:class:`ServiceTierStage`.
"""

from __future__ import annotations

import dataclasses
import hmac

from starlette.requests import cookie_parser

from gatehouse.config import IdentitySettings, TierSettings
from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import (
    IdentityUnavailable,
    InvalidApiKey,
    InvalidRequest,
    MissingApiKey,
    PermissionDenied,
    SessionExpired,
)
from gatehouse.identity.cache import MISS, TTLCache
from gatehouse.identity.principal import Principal
from gatehouse.identity.sessions import SessionManager
from gatehouse.identity.verifier import KeyVerifier, StoreUnavailable
from gatehouse.state.base import StateError
from gatehouse.store.accounts import Accounts, KeyRecord
from gatehouse.telemetry.metrics import Metrics

MISSING_KEY = ("You didn't provide an API key. You need to provide your API key in an "
               "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
EXPIRED = "Your session has expired — sign in again."
SIGNED_OUT = "You are not signed in: sign in to chat."
# sessions an administrator ended (gatehouse/identity/sessions.py end_all's ``why``)
ENDED = {"signed_out_by_admin": "An administrator signed you out — sign in again.",
         "account_disabled": "Your account has been disabled. Ask your administrator."}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_RESULT = {"missing_api_key": "missing", "session_expired": "expired",
           "identity_unavailable": "unavailable"}


def mask(token: str) -> str:
    """Enough of a presented key to recognise it, never enough to use it."""
    if len(token) <= 12:
        return "***"
    return f"{token[:6]}***{token[-4:]}"


def session_cookie(header: str | None, name: str) -> str | None:
    """The session cookie in a Cookie header, read as the web routes read it (Starlette's
    ``request.cookies``): another cookie of the site that is not RFC 6265's (``x=a b``, a
    stray quote or backslash) is skipped — SimpleCookie dropped the whole header, and the
    signed-in page's API calls then had no session."""
    return cookie_parser(header).get(name) if header else None


def invalid_key(token: str) -> InvalidApiKey:
    return InvalidApiKey(f"Incorrect API key provided: {mask(token)}. Check that the whole "
                         "key was copied, or ask your administrator for a new one.")


async def bearer_key(verifier: KeyVerifier, header: str) -> tuple[str, KeyRecord | None]:
    """The token of an ``Authorization: Bearer`` header and its usable key record (None when
    the key is not valid); a header of another shape is refused here."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidApiKey("The Authorization header must read 'Bearer YOUR_KEY'.")
    try:
        return token, await verifier.verify(token)
    except StoreUnavailable:
        raise IdentityUnavailable("The account store cannot be reached right now.",
                                  retry_after=5) from None


class IdentityStage:
    name = "identity"

    def __init__(self, verifier: KeyVerifier, sessions: SessionManager, accounts: Accounts,
                 settings: IdentitySettings, metrics: Metrics, *, scope: str = "api") -> None:
        self.verifier = verifier
        self.sessions = sessions
        self.accounts = accounts
        self.settings = settings
        self.scope = scope
        self.anonymous = Principal("anonymous", settings.anonymous_tier)
        self._users: TTLCache[Principal | None] = TTLCache(10_000, settings.key_cache_ttl,
                                                           stale=settings.key_stale_ttl)
        self._stale = metrics.identity_stale
        if verifier.on_stale is None:
            verifier.on_stale = self._stale.inc
        self._principals: dict[str, Principal] = {}
        m = metrics.auth
        self._counts = {r: m.labels(r) for r in ("key", "session", "anonymous", "missing",
                                                 "invalid", "expired", "forbidden", "unavailable")}

    async def enter(self, ctx: RequestContext) -> None:
        try:
            ctx.principal = await self._identify(ctx)
        except (InvalidApiKey, MissingApiKey, SessionExpired, PermissionDenied,
                IdentityUnavailable) as exc:
            self._counts[_RESULT.get(exc.code, "forbidden" if exc.status == 403 else "invalid")
                         ].inc()
            raise
        self._counts[ctx.principal.kind].inc()

    async def _identify(self, ctx: RequestContext) -> Principal:
        auth = ctx.headers.get("authorization")
        if auth is not None:
            token, record = await bearer_key(self.verifier, auth)
            if record is None:
                if not self.settings.require_key and not token.startswith("gh-"):
                    return self.anonymous  # open mode: a key from elsewhere is no key here
                raise invalid_key(token)
            return self._key_principal(record)
        cookie = session_cookie(ctx.headers.get("cookie"), self.settings.session_cookie)
        if cookie is not None:
            return await self._session_principal(ctx, cookie)
        if not self.settings.require_key:
            return self.anonymous
        if not ctx.path.startswith("/v1"):
            # the web chat's own route (/chat/send; "web" in telemetry by the same rule): a
            # page whose session cookie is gone, which must offer "sign in", not API-key advice
            raise SessionExpired(SIGNED_OUT)
        raise MissingApiKey(MISSING_KEY)

    def _key_principal(self, record: KeyRecord) -> Principal:
        if record.scope != self.scope:
            raise PermissionDenied(
                "Admin keys manage the gateway and cannot call models; use a project key."
                if record.scope == "admin" else
                "This key cannot use the admin API; use an admin key.")
        principal = self._principals.get(record.id)
        if principal is None or principal.tier != record.tier:
            principal = Principal("key", record.tier or "standard", record.scope, record.org_id,
                                  record.org, record.project_id, record.project, record.id,
                                  record.display)
            if len(self._principals) > 100_000:
                self._principals.clear()
            self._principals[record.id] = principal
        return principal

    async def _session_principal(self, ctx: RequestContext, cookie: str) -> Principal:
        try:
            session = await self.sessions.load(cookie)
        except StateError:
            raise IdentityUnavailable("Sessions cannot be checked right now.",
                                      retry_after=5) from None
        if session is None:
            why = await self.sessions.ended_why(cookie)
            raise SessionExpired(ENDED.get(why or "", EXPIRED))
        if ctx.method not in SAFE_METHODS:
            # cookies ride along on cross-site requests; a script of ours sends this header
            token = ctx.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                raise PermissionDenied("Missing or wrong x-csrf-token header for a request "
                                       "signed in with a session cookie.", code="csrf_failed")
        principal = self._users.get(session.user_id)
        if principal is MISS:
            try:
                user = await self.accounts.user(session.user_id)
            except Exception:  # the store is down: a user seen lately stays signed in
                principal = self._users.get_stale(session.user_id)
                if principal is MISS:
                    raise IdentityUnavailable("The account store cannot be reached right now.",
                                              retry_after=5) from None
                self._stale.inc()
            else:
                principal = None if user is None or user.disabled else Principal(
                    "session", user.tier, "api", user.org_id, None, None, None, None, None,
                    user.id, user.email)
                self._users.put(session.user_id, principal)
        if principal is None:
            raise SessionExpired(EXPIRED)
        assert isinstance(principal, Principal)
        return principal

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None


class ServiceTierStage:
    """Honours ``service_tier`` in the body within what the principal's tier permits:
    ``auto``/``default`` keep the principal's tier; a named tier must be the principal's own
    or one listed in its ``may_request``."""

    name = "service_tier"

    def __init__(self, tiers: dict[str, TierSettings]) -> None:
        self.tiers = tiers

    async def enter(self, ctx: RequestContext) -> None:
        asked = ctx.body.get("service_tier") if ctx.body else None
        if asked is None or asked in ("auto", "default"):
            return
        principal: Principal = ctx.principal
        if not isinstance(asked, str) or asked not in self.tiers:
            known = ", ".join(["auto", "default", *self.tiers])
            raise InvalidRequest(f"Invalid service_tier {asked!r}: expected one of {known}.",
                                 param="service_tier", code="invalid_value")
        if asked == principal.tier:
            return
        own = self.tiers.get(principal.tier)
        may = own.may_request if own is not None else []
        if asked not in may:
            allowed = ", ".join(["auto", principal.tier, *may])
            raise PermissionDenied(f"Your tier ({principal.tier}) may not request service_tier "
                                   f"{asked!r}; allowed: {allowed}.", param="service_tier",
                                   code="service_tier_not_allowed")
        ctx.principal = dataclasses.replace(principal, tier=asked)

    async def exit(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None

