"""What the admin API reads and writes, as pydantic models so /admin/v1/openapi.json documents
every field. Times are Unix seconds (integers), as in OpenAI's own APIs; lists come wrapped as
``{"object": "list", "data": [...]}``. No model here ever holds a key's hash, and a key's
secret appears only in :class:`NewKey`, the answer to creating or rotating a key."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from fastapi import Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gatehouse.identity.passwords import MAX_LENGTH as MAX_PASSWORD
from gatehouse.identity.passwords import MIN_LENGTH as MIN_PASSWORD
from gatehouse.store.accounts import (
    EMAIL_MAX,
    EMAIL_PATTERN,
    GRACE_MAX,
    KEY_LIFETIME_MAX,
    KEY_NAME_MAX,
    NAME_PATTERN,
    NAME_RULE,
    PROJECT_PATTERN,
    KeyInfo,
    UserInfo,
)
from gatehouse.store.tables import ApiKey, Org, Project, User
from gatehouse.turns import in_turns

T = TypeVar("T")
S = TypeVar("S")
TIER = ("A tier from gatehouse.toml (GET /admin/v1/tiers): an api tier for orgs and keys, a web "
        "tier for users.")


# C0 control characters but tab, newline and carriage return: never meant in an admin's text,
# refused by PostgreSQL (NUL: the store failed, a 500) and by XML 1.0 (the status feeds)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _control(value: Any) -> str | None:
    """The first control character in a string, or in the strings of a list or dict."""
    if isinstance(value, str):
        found = CONTROL.search(value)
        return found.group() if found else None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else \
        value if isinstance(value, list) else []
    return next((c for c in map(_control, items) if c is not None), None)


def seconds(at: float | None) -> int | None:
    return None if at is None else int(at)


PROJECT_RULE = f"ORG/PROJECT, each part {NAME_RULE}"


# an org named in a path, as it is named when made
OrgName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"{NAME_RULE}.")]


class Body(BaseModel):
    """Request bodies refuse fields they do not know, so a typo is a 400, not a no-op, and
    take each field as its own JSON type only: ``false`` is not 0 and ``"5"`` is not 5 (strict
    mode still takes a whole number where a number is asked for). No text in them holds a
    control character but tab, newline and carriage return (:data:`CONTROL`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        found = _control(value)
        if found is not None:
            raise PydanticCustomError(
                "control_character", "it holds the control character U+{code} (text may hold "
                "tabs and line breaks, no other control character)",
                {"code": f"{ord(found):04X}"})
        return value


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]


PAGE_PIECE = 256  # items made and serialized between turns of the loop (json_page)


def _json_pieces(items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    batch: list[dict[str, Any]] = []
    for item in items:  # made here, as they are taken
        batch.append(item)
        if len(batch) == PAGE_PIECE:
            yield orjson.dumps(batch)[1:-1]
            batch.clear()
    if batch:
        yield orjson.dumps(batch)[1:-1]


async def json_page(items: Iterable[dict[str, Any]]) -> Response:
    """A :class:`Page` of ``items`` already in their model's JSON shape, made and serialized
    a piece at a time with the loop free between pieces (:mod:`gatehouse.turns`): 10,000
    firewall rules made into models and dumped at once held the worker's loop ~90 ms. The
    route names the Page's model as its ``response_model`` for the OpenAPI document."""
    async def one() -> AsyncGenerator[Iterable[dict[str, Any]], None]:
        yield items

    return await json_pages(one(), lambda item: item)


async def json_pages(pages: AsyncGenerator[Iterable[S], None],
                     shape: Callable[[S], dict[str, Any]]) -> Response:
    """:func:`json_page` of what a store reads a page at a time (``LISTING_ROWS``), each item
    put in its model's JSON shape by ``shape``. The whole answer is made before it is sent: a
    store failing half way is the admin API's 503, never a list cut short."""
    pieces: list[bytes] = []
    async with contextlib.aclosing(pages):
        async for page in pages:
            pieces += [piece async for piece in in_turns(_json_pieces(map(shape, page)))]
    return Response(b'{"object":"list","data":[' + b",".join(pieces) + b"]}",
                    media_type="application/json")


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = Field(examples=["tier"])
    code: str | None = Field(examples=["invalid_value"])


class ErrorBody(BaseModel):
    """OpenAI's error shape, plus the id to quote to support (also in ``x-request-id``)."""

    error: ErrorDetail
    request_id: str | None = Field(None, examples=["req_01m84n3mkb5qh27zf26yfddj61"])


# -- orgs and projects --------------------------------------------------------------------
class OrgIn(Body):
    name: str = Field(pattern=NAME_PATTERN, description=f"{NAME_RULE}.", examples=["acme"])
    tier: str = Field("standard", description=TIER, examples=["standard"])


class OrgPatch(Body):
    tier: str = Field(description=TIER, examples=["priority"])


class OrgOut(BaseModel):
    id: str
    name: str
    tier: str
    created_at: int

    @staticmethod
    def shaped(org: Org) -> dict[str, Any]:
        """An org in this model's JSON shape (what a listing sends, made without the model)."""
        return {"id": org.id, "name": org.name, "tier": org.tier,
                "created_at": int(org.created_at)}

    @classmethod
    def of(cls, org: Org) -> OrgOut:
        return cls(**cls.shaped(org))


class ProjectIn(Body):
    project: str = Field(pattern=PROJECT_PATTERN, description=f"{PROJECT_RULE}; the org must "
                         "exist.", examples=["acme/web"])


class ProjectOut(BaseModel):
    id: str
    project: str = Field(description="ORG/PROJECT, as keys refer to it.", examples=["acme/web"])
    org: str
    name: str
    created_at: int

    @staticmethod
    def shaped(row: tuple[str, Project]) -> dict[str, Any]:
        """(org name, project) in this model's JSON shape (what a listing sends)."""
        org, project = row
        return {"id": project.id, "project": f"{org}/{project.name}", "org": org,
                "name": project.name, "created_at": int(project.created_at)}

    @classmethod
    def of(cls, org: str, project: Project) -> ProjectOut:
        return cls(**cls.shaped((org, project)))


# -- keys ---------------------------------------------------------------------------------
class KeyIn(Body):
    scope: Literal["api", "admin"] = Field(
        "api", description="api: calls models for a project; admin: this API, no project.")
    project: str | None = Field(None, pattern=PROJECT_PATTERN, description="ORG/PROJECT; "
                                "required for api keys, refused for admin keys.",
                                examples=["acme/web"])
    tier: str | None = Field(None, description="Overrides the org's tier (an api tier); "
                             "null follows the org.")
    name: str = Field("", max_length=KEY_NAME_MAX, description="A label to tell keys apart.",
                      examples=["ci"])
    expires_in_seconds: int | None = Field(None, gt=0, le=KEY_LIFETIME_MAX,
                                           description="Lifetime; null never expires.")


class RotateIn(Body):
    grace_seconds: int = Field(0, ge=0, le=GRACE_MAX, description="Keep the old key working "
                               "this long so deployments can switch over; 0 revokes it now.")


class KeyOut(BaseModel):
    id: str
    display: str = Field(description="Enough of the key to recognise it; never usable.")
    scope: Literal["api", "admin"]
    name: str
    project: str | None
    tier: str | None = Field(description="The key's own tier; null follows its org's tier.")
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None = Field(description="Recorded about every 30 seconds.")
    status: Literal["active", "revoked", "expired"]

    @staticmethod
    def shaped(info: KeyInfo) -> dict[str, Any]:
        """A key in this model's JSON shape (what a listing sends, made without the model)."""
        return {"id": info.id, "display": info.display,
                "scope": "admin" if info.scope == "admin" else "api", "name": info.name,
                "project": info.project, "tier": info.tier, "created_at": int(info.created_at),
                "expires_at": seconds(info.expires_at), "revoked_at": seconds(info.revoked_at),
                "last_used_at": seconds(info.last_used_at),
                "status": info.status(time.time())}

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(**cls.shaped(info))

    @classmethod
    def of_row(cls, row: ApiKey, project: str | None) -> KeyOut:
        return cls.of(KeyInfo(row.id, row.display, row.scope, row.name, project, row.tier,
                              row.created_at, row.expires_at, row.revoked_at,
                              row.last_used_at))


class NewKey(KeyOut):
    key: str = Field(description="The key itself. Shown in this answer only: store it now.")


class Rotated(NewKey):
    replaced: KeyOut = Field(description="The old key: revoked, or expiring after the grace.")


# -- users --------------------------------------------------------------------------------
class UserIn(Body):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=EMAIL_MAX,
                       description="Stored in lower case.", examples=["ada@example.com"])
    password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD,
                          description="Never returned.")
    org: str | None = Field(None, pattern=NAME_PATTERN, examples=["acme"])
    tier: str = Field("free", description="A web tier.", examples=["free"])


class UserPatch(Body):
    tier: str | None = Field(None, description="A web tier.")
    disabled: bool | None = Field(None, description="true stops sign-in and ends every "
                                  "session.")
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD,
                                 description="A new password; ends every session.")


class UserOut(BaseModel):
    id: str
    email: str
    org: str | None
    tier: str
    disabled: bool
    created_at: int

    @staticmethod
    def shaped(info: UserInfo) -> dict[str, Any]:
        """A user in this model's JSON shape (what a listing sends, made without the model)."""
        return {"id": info.id, "email": info.email, "org": info.org, "tier": info.tier,
                "disabled": info.disabled, "created_at": int(info.created_at)}

    @classmethod
    def of(cls, user: User, org: str | None) -> UserOut:
        return cls(**cls.shaped(UserInfo(user.id, user.email, org, user.tier, user.disabled,
                                         user.created_at)))


class UserUpdated(UserOut):
    sessions_ended: int = Field(description="Sessions ended by this change (disabling or a "
                                "new password signs the user out everywhere).")


class LoggedOut(BaseModel):
    email: str
    sessions_ended: int


class Unlocked(BaseModel):
    email: str
    unlocked: bool  # false: no failed sign-ins were counted for it


# -- tiers --------------------------------------------------------------------------------
class TierOut(BaseModel):
    name: str
    kind: Literal["api", "web"]
    may_request: list[str] = Field(description="Other tiers a request may ask for with "
                                   "service_tier.")
    description: str


_MEANING = {400: "Invalid request: `param` names the field", 401: "No admin key, or not a "
            "valid one", 403: "A project key, not an admin key", 404: "No such org, project, "
            "key or user (or path)", 409: "Already exists", 503: "The account store cannot be "
            "reached; retry after Retry-After"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error answers a route may give."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]}
            for status in statuses}
