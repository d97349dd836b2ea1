"""The account store, run against SQLite and against a real PostgreSQL (own schema per test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, update

from gatehouse.identity.keys import KeyMaterial
from gatehouse.store import accounts as accounts_module
from gatehouse.store.account_tables import ApiKey
from gatehouse.store.accounts import AccountError, Accounts
from gatehouse.store.db import Store
from tests.support.services import PG_URL, migrated_store, pg_schema

SECRET = b"store-test-secret-0123456789abcdef0123"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for s in migrated_store(request.param, str(tmp_path)):
        yield s


@pytest.fixture
def accounts(store: Store) -> Accounts:
    return Accounts(store, KeyMaterial(SECRET))


async def test_migration_creates_the_tables(store: Store) -> None:
    async with store.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"orgs", "projects", "api_keys", "users", "alembic_version"} <= names
    await store.migrate()  # a second run is a no-op, not an error


async def test_a_store_at_the_newest_revision_is_known_without_alembic(store: Store,
                                                                       tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from gatehouse.store.db import alembic_config, head_revision

    # the files' head as read without Alembic is Alembic's own
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await store.at_head()
    async with store.engine.begin() as conn:  # one revision behind: not at the head
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001_identity'")
    assert not await store.at_head()
    fresh = Store(f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
    try:
        assert not await fresh.at_head()  # no alembic_version table at all
    finally:
        await fresh.aclose()


async def test_org_project_key_round_trip(accounts: Accounts) -> None:
    org = await accounts.create_org("acme", "standard")
    _, project = await accounts.create_project("acme/support-bot")
    plain, row = await accounts.create_key("acme/support-bot", tier="priority", name="ci")
    assert plain.startswith("gh-supportbot-")
    assert plain not in row.hash and row.hash == accounts.keys.digest(plain)
    assert row.display.startswith("gh-supportbot-") and "…" in row.display
    assert plain[-4:] == row.display[-4:] and len(row.display) < len(plain) / 2
    record = await accounts.find_key(row.hash)
    assert record is not None
    assert (record.org, record.project, record.tier, record.scope) == \
        ("acme", "support-bot", "priority", "api")
    assert record.org_id == org.id and record.project_id == project.id
    assert record.usable(time.time())


async def test_key_tier_falls_back_to_the_org(accounts: Accounts) -> None:
    await accounts.create_org("acme", "flex")
    await accounts.create_project("acme/p")
    _, row = await accounts.create_key("acme/p")
    assert (await accounts.find_key(row.hash)).tier == "flex"  # type: ignore[union-attr]
    await accounts.set_org_tier("acme", "priority")
    assert (await accounts.find_key(row.hash)).tier == "priority"  # type: ignore[union-attr]


async def test_names_conflicts_and_lookups(accounts: Accounts) -> None:
    await accounts.create_org("acme", "standard")
    with pytest.raises(AccountError) as dup:
        await accounts.create_org("acme", "standard")
    assert dup.value.kind == "conflict"
    with pytest.raises(AccountError) as bad:
        await accounts.create_org("Acme Corp!", "standard")
    assert bad.value.kind == "invalid"
    with pytest.raises(AccountError) as missing:
        await accounts.create_project("nope/x")
    assert missing.value.kind == "not_found"
    with pytest.raises(AccountError) as shape:
        await accounts.create_project("acme")
    assert shape.value.kind == "invalid"
    await accounts.create_project("acme/x")
    with pytest.raises(AccountError) as again:
        await accounts.create_project("acme/x")
    assert again.value.kind == "conflict"
    await accounts.create_org("beta", "standard")
    await accounts.create_project("beta/x")  # the same project name in another org is fine
    assert [(o, p.name) for o, p in await accounts.projects()] == [("acme", "x"), ("beta", "x")]
    assert [(o, p.name) for o, p in await accounts.projects("beta")] == [("beta", "x")]
    assert await accounts.find_key("0" * 64) is None


async def test_revoke_expire_rotate(accounts: Accounts) -> None:
    await accounts.create_org("acme", "standard")
    await accounts.create_project("acme/p")
    plain, row = await accounts.create_key("acme/p", name="deploy")
    revoked = await accounts.revoke_key(row.id)
    assert revoked.revoked_at is not None
    assert not (await accounts.find_key(row.hash)).usable(time.time())  # type: ignore[union-attr]

    _, soon = await accounts.create_key("acme/p", expires_at=time.time() + 3600)
    record = await accounts.find_key(soon.hash)
    assert record is not None and record.usable(time.time())
    assert not record.usable(time.time() + 3601)
    with pytest.raises(AccountError):
        await accounts.create_key("acme/p", expires_at=time.time() - 1)

    new_plain, new, old = await accounts.rotate_key(soon.id, grace=60)
    assert new_plain != plain and new.name == soon.name and new.project_id == soon.project_id
    old_record = await accounts.find_key(old.hash)
    assert old_record is not None and old_record.usable(time.time())  # within the grace
    assert not old_record.usable(time.time() + 61)
    _, _, gone = await accounts.rotate_key(new.id)
    assert gone.revoked_at is not None
    with pytest.raises(AccountError):
        await accounts.rotate_key(row.id)  # revoked keys are not rotated

    infos = await accounts.key_infos(project="acme/p")
    assert len(infos) == 4 and all(i.project == "acme/p" for i in infos)
    for info in infos:  # a listing never carries a secret
        assert not hasattr(info, "hash")


async def test_admin_keys_and_last_used(accounts: Accounts) -> None:
    plain, row = await accounts.create_key(None, scope="admin")
    assert plain.startswith("gh-admin-")
    record = await accounts.find_key(row.hash)
    assert record is not None and record.scope == "admin" and record.org is None
    with pytest.raises(AccountError):
        await accounts.create_key(None)  # an API key needs a project
    with pytest.raises(AccountError):
        await accounts.create_key(None, scope="root")
    await accounts.touch_keys({row.id: 1234.5})
    assert [i.last_used_at for i in await accounts.key_infos(scope="admin")] == [1234.5]


async def test_users(accounts: Accounts) -> None:
    await accounts.create_org("acme", "standard")
    user = await accounts.create_user(" Ann@Example.com ", "hash", "acme", "plus")
    assert user.email == "ann@example.com"
    assert (await accounts.user_by_email("ANN@example.com")).id == user.id  # type: ignore[union-attr]
    with pytest.raises(AccountError) as dup:
        await accounts.create_user("ann@example.com", "hash", None, "free")
    assert dup.value.kind == "conflict"
    with pytest.raises(AccountError):
        await accounts.create_user("not-an-email", "hash", None, "free")
    updated = await accounts.update_user("ann@example.com", tier="pro", disabled=True)
    assert (updated.tier, updated.disabled) == ("pro", True)
    assert [(u.email, u.org, u.tier, u.disabled) for u in await accounts.users()] == \
        [("ann@example.com", "acme", "pro", True)]


async def test_listings_come_a_page_at_a_time_from_one_statement(
        accounts: Accounts, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and users are read through one cursor, ``LISTING_ROWS`` at a time (the serving
    worker's loop runs between pages): 10,000 keys read and made at once held it ~100 ms.
    Pages hold every row once, in order (keys oldest first, ties by id; users by email), on
    SQLite and on PostgreSQL (a server-side cursor)."""
    monkeypatch.setattr(accounts_module, "LISTING_ROWS", 7)
    await accounts.create_org("acme", "standard")
    await accounts.create_project("acme/bot")
    made = [(await accounts.create_key("acme/bot", name=f"k{i}"))[1] for i in range(17)]
    async with store.session() as s:  # three keys made in the same instant: ties by id
        await s.execute(update(ApiKey).where(ApiKey.id.in_([r.id for r in made[:3]]))
                        .values(created_at=made[0].created_at))
        await s.commit()
    statements = store.queries
    pages = [page async for page in await accounts.key_info_pages(project="acme/bot")]
    assert [len(page) for page in pages] == [7, 7, 3]
    assert [k.id for page in pages for k in page] == \
        sorted(r.id for r in made[:3]) + [r.id for r in made[3:]]
    assert {k.project for page in pages for k in page} == {"acme/bot"}
    assert store.queries - statements <= 3  # org and project looked up, then one listing
    assert await accounts.key_infos("acme") == [k for page in pages for k in page]
    for i in range(9):
        await accounts.create_user(f"u{8 - i}@example.com", "hash", "acme" if i % 2 else None,
                                   "free")
    pages_of_users = [page async for page in await accounts.user_pages()]
    assert [len(page) for page in pages_of_users] == [7, 2]
    assert [u.email for page in pages_of_users for u in page] == \
        [f"u{i}@example.com" for i in range(9)]
    assert [u.org for u in pages_of_users[0][:2]] == [None, "acme"]


async def test_postgres_migrations_are_safe_when_replicas_start_together() -> None:
    async for schema in pg_schema():
        stores = [Store(PG_URL, schema=schema) for _ in range(4)]
        try:
            await asyncio.gather(*(s.migrate() for s in stores))
            accounts = Accounts(stores[0], KeyMaterial(SECRET))
            await accounts.create_org("acme", "standard")
        finally:
            for s in stores:
                await s.aclose()


async def test_sqlite_migrations_are_safe_when_replicas_start_together(tmp_path: Path) -> None:
    stores = [Store(f"sqlite+aiosqlite:///{tmp_path}/shared.db") for _ in range(4)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        await Accounts(stores[1], KeyMaterial(SECRET)).create_org("acme", "standard")
    finally:
        for s in stores:
            await s.aclose()


async def test_rotating_an_expired_key_gives_a_fresh_lifetime(accounts: Accounts) -> None:
    await accounts.create_org("acme", "standard")
    await accounts.create_project("acme/p")
    _, row = await accounts.create_key("acme/p", expires_at=time.time() + 0.2)
    await asyncio.sleep(0.25)
    _, new, _ = await accounts.rotate_key(row.id)
    record = await accounts.find_key(new.hash)
    assert record is not None and record.usable(time.time())
    assert new.expires_at is not None and new.expires_at > time.time() + 30
