"""Repository over orgs, projects, API keys and users: what the CLI, the admin API and the
identity stage ask of the store. Names are ``org`` and ``org/project``."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import Row, Select, func, inspect, select, update
from sqlalchemy.exc import IntegrityError

from gatehouse.identity.keys import KeyMaterial, display
from gatehouse.store.account_tables import ApiKey, Org, Project, User
from gatehouse.store.db import Store

# one definition of what a name and an email look like: checked here and stated (as the same
# patterns, which pydantic and OpenAPI read) by the admin API's models
_NAME = r"[a-z0-9][a-z0-9._-]{0,63}"
NAME_PATTERN = rf"^{_NAME}$"
NAME_RULE = "1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
PROJECT_PATTERN = rf"^{_NAME}/{_NAME}$"
# no "/": the admin API addresses a user as /users/{email}, and a "/" (even sent as %2F, which
# the server decodes) would make that user unreachable there (found by schemathesis); no
# control character: PostgreSQL's text cannot hold a NUL, and none belongs in an address
EMAIL_PATTERN = r"^[^@\s/\x00-\x1f\x7f]+@[^@\s/\x00-\x1f\x7f]+$"
EMAIL_MAX = 254
NAME_MAX = 64  # an org's or a project's name (the pattern above)
KEY_NAME_MAX = 128  # a key's label
ID_MAX = 64  # longer than any id made here (key_…, rule_…): a lookup of more finds nothing
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
KEY_LIFETIME_MAX = 10 * 366 * 86400  # the longest a key may be made to live (API and CLI)
GRACE_MAX = 30 * 86400  # the longest a rotated key keeps working
NAME = re.compile(NAME_PATTERN)
# rows a listing reads and makes at a time, the loop free between (one query, read through a
# cursor): 10,000 keys made at once held a serving worker's loop ~100 ms
LISTING_ROWS = 500
Ts = TypeVarTuple("Ts")
T = TypeVar("T")


class AccountError(Exception):
    """``kind`` is ``not_found``, ``conflict`` or ``invalid``; the message is for people."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the identity stage needs it: who it belongs to and its effective tier."""

    id: str
    digest: str
    scope: str
    display: str
    org_id: str | None
    org: str | None
    project_id: str | None
    project: str | None
    tier: str | None
    expires_at: float | None
    revoked: bool

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    display: str
    scope: str
    name: str
    project: str | None
    tier: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def status(self, now: float) -> str:
        """``revoked``, ``expired`` (at ``now``) or ``active``: what the admin API and the CLI
        say of a key."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and self.expires_at <= now else "active"


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    email: str
    org: str | None
    tier: str
    disabled: bool
    created_at: float


def _key_info(row: Row[*tuple[Any, ...]]) -> KeyInfo:
    """A listing's row (key columns, org and project names) as a :class:`KeyInfo`."""
    i, d, sc, n, o, p, t, c, e, r, u = row
    return KeyInfo(i, d, sc, n, f"{o}/{p}" if p is not None else None, t, c, e, r, u)


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


def check_name(what: str, name: str) -> str:
    if not NAME.fullmatch(name):  # fullmatch: "$" alone lets a trailing newline through
        raise AccountError("invalid", f"{what} name {name!r} must be {NAME_RULE}")
    return name


def split_project(ref: str) -> tuple[str, str]:
    org, sep, project = ref.partition("/")
    if not sep or not org or not project:
        raise AccountError("invalid", f"name the project as ORG/PROJECT, not {ref!r}")
    return org, project


async def stored_keys(store: Store) -> int:
    """How many API keys the store holds, revoked and expired ones included (each was made
    with the server secret of its day); 0 for a store without the table yet."""
    async with store.engine.connect() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table(ApiKey.__tablename__)):
            return 0
        return (await conn.execute(select(func.count()).select_from(ApiKey))).scalar_one()


class Accounts:
    def __init__(self, store: Store, keys: KeyMaterial) -> None:
        self.store = store
        self.keys = keys

    # -- orgs --------------------------------------------------------------------------
    async def create_org(self, name: str, tier: str) -> Org:
        org = Org(id=new_id("org"), name=check_name("org", name), tier=tier,
                  created_at=time.time())
        async with self.store.session() as s:
            s.add(org)
            try:
                await s.commit()
            except IntegrityError:
                raise AccountError("conflict", f"org {name!r} already exists") from None
        return org

    async def org(self, name: str) -> Org:
        async with self.store.session() as s:
            org = await s.scalar(select(Org).where(Org.name == name))
        if org is None:
            raise AccountError("not_found", f"no org named {name!r}")
        return org

    async def org_name(self, org_id: str) -> str | None:
        async with self.store.session() as s:
            return await s.scalar(select(Org.name).where(Org.id == org_id))

    async def orgs(self) -> list[Org]:
        return [o async for page in await self.org_pages() for o in page]

    async def org_pages(self) -> AsyncGenerator[list[Org], None]:
        """The orgs by name, ``LISTING_ROWS`` at a time."""
        return self._pages(select(Org).order_by(Org.name), lambda row: row[0])

    async def set_org_tier(self, name: str, tier: str) -> Org:
        org = await self.org(name)
        async with self.store.session() as s:
            await s.execute(update(Org).where(Org.id == org.id).values(tier=tier))
            await s.commit()
        org.tier = tier
        return org

    # -- projects ----------------------------------------------------------------------
    async def create_project(self, ref: str) -> tuple[Org, Project]:
        org_name, name = split_project(ref)
        org = await self.org(org_name)
        project = Project(id=new_id("proj"), org_id=org.id, name=check_name("project", name),
                          created_at=time.time())
        async with self.store.session() as s:
            s.add(project)
            try:
                await s.commit()
            except IntegrityError:
                raise AccountError("conflict", f"project {ref!r} already exists") from None
        return org, project

    async def project(self, ref: str) -> tuple[Org, Project]:
        org_name, name = split_project(ref)
        org = await self.org(org_name)
        async with self.store.session() as s:
            project = await s.scalar(select(Project).where(Project.org_id == org.id,
                                                           Project.name == name))
        if project is None:
            raise AccountError("not_found", f"no project named {ref!r}")
        return org, project

    async def projects(self, org: str | None = None) -> list[tuple[str, Project]]:
        return [p async for page in await self.project_pages(org) for p in page]

    async def project_pages(self, org: str | None = None
                            ) -> AsyncGenerator[list[tuple[str, Project]], None]:
        """(org name, project) of ``org`` (looked up now: AccountError if there is none) or
        of all, by org and name, ``LISTING_ROWS`` at a time."""
        query = select(Org.name, Project).join(Org, Org.id == Project.org_id)
        if org is not None:
            query = query.where(Org.name == (await self.org(org)).name)
        return self._pages(query.order_by(Org.name, Project.name), lambda row: (row[0], row[1]))

    # -- keys --------------------------------------------------------------------------
    async def create_key(self, ref: str | None, *, scope: str = "api", tier: str | None = None,
                         name: str = "", expires_at: float | None = None) -> tuple[str, ApiKey]:
        """Mint a key for project ``ref`` (or an admin key with ``ref=None``): returns the key
        itself — the only time it exists outside the caller — and its row."""
        org_id = project_id = None
        hint = "admin"
        if scope == "api":
            if ref is None:
                raise AccountError("invalid", "an API key belongs to a project (ORG/PROJECT)")
            org, project = await self.project(ref)
            org_id, project_id, hint = org.id, project.id, project.name
        elif scope != "admin":
            raise AccountError("invalid", f"unknown key scope {scope!r} (api or admin)")
        if expires_at is not None and expires_at <= time.time():
            raise AccountError("invalid", "the expiry must be in the future")
        plain = self.keys.mint(hint)
        row = ApiKey(id=new_id("key"), hash=self.keys.digest(plain), display=display(plain),
                     scope=scope, name=name, org_id=org_id, project_id=project_id, tier=tier,
                     created_at=time.time(), expires_at=expires_at)
        async with self.store.session() as s:
            s.add(row)
            await s.commit()
        return plain, row

    async def find_key(self, digest: str) -> KeyRecord | None:
        """The key with this hash, with its org and project (one query)."""
        query = (select(ApiKey, Org.name, Org.tier, Project.name)
                 .outerjoin(Org, Org.id == ApiKey.org_id)
                 .outerjoin(Project, Project.id == ApiKey.project_id)
                 .where(ApiKey.hash == digest))
        async with self.store.session() as s:
            row = (await s.execute(query)).first()
        if row is None:
            return None
        key, org_name, org_tier, project_name = row
        return KeyRecord(key.id, key.hash, key.scope, key.display, key.org_id, org_name,
                         key.project_id, project_name, key.tier or org_tier, key.expires_at,
                         key.revoked_at is not None)

    async def key_infos(self, org: str | None = None, project: str | None = None,
                        scope: str | None = None) -> list[KeyInfo]:
        return [k async for page in await self.key_info_pages(org, project, scope)
                for k in page]

    async def key_info_pages(self, org: str | None = None, project: str | None = None,
                             scope: str | None = None) -> AsyncGenerator[list[KeyInfo], None]:
        """The keys (of ``project``, else of ``org``, else all, looked up now: AccountError
        if there is none; of one ``scope``), oldest first, ``LISTING_ROWS`` at a time."""
        query = (select(ApiKey.id, ApiKey.display, ApiKey.scope, ApiKey.name, Org.name,
                        Project.name, ApiKey.tier, ApiKey.created_at, ApiKey.expires_at,
                        ApiKey.revoked_at, ApiKey.last_used_at)
                 .outerjoin(Org, Org.id == ApiKey.org_id)
                 .outerjoin(Project, Project.id == ApiKey.project_id))
        if project is not None:
            query = query.where(ApiKey.project_id == (await self.project(project))[1].id)
        elif org is not None:
            query = query.where(ApiKey.org_id == (await self.org(org)).id)
        if scope is not None:
            query = query.where(ApiKey.scope == scope)
        return self._pages(query.order_by(ApiKey.created_at, ApiKey.id), _key_info)

    async def _pages(self, query: Select[*Ts], make: Callable[[Row[*Ts]], T]
                     ) -> AsyncGenerator[list[T], None]:
        """A query's rows made into items by ``make``, ``LISTING_ROWS`` at a time, read
        through one cursor (one statement, one snapshot; the loop runs between the pages)."""
        async with self.store.session() as s:
            result = await s.stream(query)
            async for rows in result.partitions(LISTING_ROWS):
                yield [make(row) for row in rows]

    async def key(self, key_id: str) -> ApiKey:
        async with self.store.session() as s:
            row = await s.get(ApiKey, key_id)
        if row is None:
            raise AccountError("not_found", f"no key with id {key_id!r}")
        return row

    async def revoke_key(self, key_id: str, at: float | None = None) -> ApiKey:
        """Revoke now (or let it expire at ``at``); returns the row, whose hash the caller
        broadcasts so every replica drops it from its cache."""
        row = await self.key(key_id)
        now = time.time()
        values: dict[str, float] = {"revoked_at": now} if at is None or at <= now else \
            {"expires_at": min(at, row.expires_at or at)}
        async with self.store.session() as s:
            await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
            await s.commit()
        for name, value in values.items():
            setattr(row, name, value)
        return row

    async def rotate_key(self, key_id: str, grace: float = 0.0) -> tuple[str, ApiKey, ApiKey]:
        """A new key for the same project, tier and name; the old one stops now, or after
        ``grace`` seconds so deployments can switch over."""
        old = await self.key(key_id)
        if old.revoked_at is not None:
            raise AccountError("invalid", f"key {key_id} is revoked; create a new one instead")
        ref = None
        if old.project_id is not None:
            async with self.store.session() as s:
                project = await s.get(Project, old.project_id)
                org = await s.get(Org, old.org_id)
            assert project is not None and org is not None
            ref = f"{org.name}/{project.name}"
        # the new key lives as long as the old one was meant to, counted from now
        expires_at = None if old.expires_at is None else \
            time.time() + max(60.0, old.expires_at - old.created_at)
        plain, new = await self.create_key(ref, scope=old.scope, tier=old.tier, name=old.name,
                                           expires_at=expires_at)
        old = await self.revoke_key(key_id, at=time.time() + grace if grace > 0 else None)
        return plain, new, old

    async def touch_keys(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        async with self.store.session() as s:
            for key_id, at in last_used.items():
                await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
            await s.commit()

    async def scope_id(self, scope: str, name: str) -> str:
        """The id behind a name: org ``acme``, project ``acme/bot``, key ``key_…``, user
        email."""
        if scope == "org":
            return (await self.org(name)).id
        if scope == "project":
            return (await self.project(name))[1].id
        if scope == "key":
            return (await self.key(name)).id
        if scope == "user":
            user = await self.user_by_email(name)
            if user is None:
                raise AccountError("not_found", f"no user {name!r}")
            return user.id
        raise AccountError("invalid", "scope must be org, project, key or user")

    # -- users -------------------------------------------------------------------------
    async def create_user(self, email: str, password_hash: str, org: str | None,
                          tier: str) -> User:
        email = email.strip().lower()
        if not re.fullmatch(EMAIL_PATTERN, email) or len(email) > EMAIL_MAX:
            raise AccountError("invalid", f"{email!r} is not an email address")
        org_id = (await self.org(org)).id if org else None
        user = User(id=new_id("user"), email=email, password_hash=password_hash, org_id=org_id,
                    tier=tier, disabled=False, created_at=time.time())
        async with self.store.session() as s:
            s.add(user)
            try:
                await s.commit()
            except IntegrityError:
                raise AccountError("conflict", f"user {email!r} already exists") from None
        return user

    async def user_by_email(self, email: str) -> User | None:
        if CONTROL.search(email):
            return None  # nobody's: create_user refuses them (no query needed)
        async with self.store.session() as s:
            user: User | None = await s.scalar(
                select(User).where(User.email == email.strip().lower()))
            return user

    async def user(self, user_id: str) -> User | None:
        async with self.store.session() as s:
            return await s.get(User, user_id)

    async def users(self) -> list[UserInfo]:
        return [u async for page in await self.user_pages() for u in page]

    async def user_pages(self) -> AsyncGenerator[list[UserInfo], None]:
        """The users by email, ``LISTING_ROWS`` at a time."""
        query = (select(User.id, User.email, Org.name, User.tier, User.disabled,
                        User.created_at)
                 .outerjoin(Org, Org.id == User.org_id).order_by(User.email))
        return self._pages(query, lambda row: UserInfo(*row))

    async def update_user(self, email: str, *, password_hash: str | None = None,
                          tier: str | None = None, disabled: bool | None = None) -> User:
        user = await self.user_by_email(email)
        if user is None:
            raise AccountError("not_found", f"no user {email!r}")
        values: dict[str, object] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if tier is not None:
            values["tier"] = tier
        if disabled is not None:
            values["disabled"] = disabled
        if values:
            async with self.store.session() as s:
                await s.execute(update(User).where(User.id == user.id).values(**values))
                await s.commit()
            for name, value in values.items():
                setattr(user, name, value)
        return user
