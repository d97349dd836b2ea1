"""Key material, the caches and the verifier: correctness and "no SQL on the hot path"."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.identity.cache import MISS, TTLCache
from gatehouse.identity.keys import (
    KeyMaterial,
    SecretUnusable,
    display,
    hint_for,
    load_server_secret,
)
from gatehouse.identity.verifier import EVERYTHING, KeyVerifier, StoreUnavailable
from gatehouse.store.accounts import Accounts
from gatehouse.store.db import Store

SECRET = b"verifier-test-secret-0123456789abcdef"


def test_minted_keys_are_long_random_and_checkable() -> None:
    km = KeyMaterial(SECRET)
    keys = {km.mint("Support Bot") for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("gh-supportbot-") and km.well_formed(key)
        assert len(key) - len("gh-supportbot-") == 46  # 40 random base-62 chars + 6 check
    key = next(iter(keys))
    flipped = key[:-7] + ("A" if key[-7] != "A" else "B") + key[-6:]
    assert not km.well_formed(flipped)  # one changed character fails the check
    assert not km.well_formed(key + "x") and not km.well_formed("sk-" + key[3:])
    assert not km.well_formed("gh-x-" + "a" * 46) and not km.well_formed("")
    assert not KeyMaterial(b"another-server-secret-0123456789abcdef").well_formed(key)
    assert km.digest(key) != KeyMaterial(b"another-server-secret-0123456789abcdef").digest(key)
    assert display(key).startswith("gh-supportbot-") and display(key).endswith(key[-4:])
    assert hint_for("!!!") == "key" and hint_for("A-very-long-project-name") == "averylongp"
    with pytest.raises(ValueError):
        KeyMaterial(b"short")


def test_derived_keys_differ_by_purpose_and_secret() -> None:
    km = KeyMaterial(SECRET)
    assert km.derive("edge clearance") == KeyMaterial(SECRET).derive("edge clearance")
    assert km.derive("edge clearance") != km.derive("edge challenge")
    assert km.derive("edge clearance") != \
        KeyMaterial(b"another-server-secret-0123456789abcdef").derive("edge clearance")
    assert len(km.derive("x")) == 32 and SECRET not in km.derive("x")


def anyway(path: Path) -> None:
    """A new secret may be made (the store holds no keys: tests/unit/test_identity_secret.py)."""


def test_server_secret_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gatehouse.secret"
    first = load_server_secret(None, str(path), anyway)
    assert len(first) >= 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_server_secret(None, str(path), anyway) == first
    assert load_server_secret("x" * 40, str(path), anyway) == b"x" * 40
    path.write_text("too short\n")
    with pytest.raises(SecretUnusable, match="is 9 characters long: it must be at least 32"):
        load_server_secret(None, str(path), anyway)


def test_a_secret_file_that_cannot_be_used_is_said_naming_it(tmp_path: Path) -> None:
    """Each way the file can be wrong gives one sentence naming it (the CLI and ``serve`` say
    it as a configuration error: tests/unit/test_serving.py), never an OSError's traceback."""
    binary = tmp_path / "binary.secret"
    binary.write_bytes(b"\xff\xfe" * 20)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    dangling = tmp_path / "dangling.secret"  # a secret mount that is missing
    dangling.symlink_to(tmp_path / "nowhere" / "secret")
    for path, said in [(tmp_path, "is a directory"), (binary, "is not UTF-8 text"),
                       (blocker / "gatehouse.secret", "cannot read or make"),
                       (Path("/proc/no-such-dir/gatehouse.secret"), "cannot read or make"),
                       # read: not found; made: exists — it recursed until RecursionError
                       (dangling, "a link to a file that does not exist")]:
        with pytest.raises(SecretUnusable) as caught:
            load_server_secret(None, str(path), anyway)
        assert said in str(caught.value) and str(path) in str(caught.value)


def test_ttl_cache_bounds_and_expiry() -> None:
    now = [0.0]
    cache: TTLCache[int] = TTLCache(3, 10, clock=lambda: now[0])
    for i in range(5):
        cache.put(str(i), i)
    assert len(cache) == 3 and cache.get("0") is MISS and cache.get("4") == 4
    cache.get("2")  # recently used: survives the next insert
    cache.put("5", 5)
    assert cache.get("2") == 2 and cache.get("3") is MISS
    now[0] = 11
    assert cache.get("5") is MISS


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Store, Accounts, KeyVerifier]]:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/k.db")
    await store.migrate()
    accounts = Accounts(store, KeyMaterial(SECRET))
    await accounts.create_org("acme", "standard")
    await accounts.create_project("acme/bot")
    verifier = KeyVerifier(accounts.keys, accounts, ttl=0.5, size=100, negative_ttl=60,
                           negative_size=100)
    yield store, accounts, verifier
    await verifier.aclose()
    await store.aclose()


async def test_unknown_key_flood_costs_no_sql(setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    other = KeyMaterial(b"an-attackers-guess-at-the-secret-0123")
    before = store.queries
    for _ in range(2000):
        assert await verifier.verify(other.mint("bot")) is None  # right shape, wrong check
        assert await verifier.verify("sk-proj-" + os.urandom(20).hex()) is None
    assert store.queries == before


async def test_valid_key_is_checked_once_then_cached(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    plain, row = await accounts.create_key("acme/bot")
    before = store.queries
    results = await asyncio.gather(*(verifier.verify(plain) for _ in range(50)))
    assert all(r is not None and r.id == row.id for r in results)
    assert store.queries - before == 1  # concurrent misses share one lookup
    for _ in range(500):
        assert await verifier.verify(plain) is not None
    assert store.queries - before == 1


async def test_a_cached_key_vouches_for_itself_alone(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    """A known key skips the form check (its digest finds it first): its near misses — a
    character changed, added or cut, the key inside a huge header — are refused as before,
    none of them hashed whole past 80 characters, none of them asking the store."""
    store, accounts, verifier = setup
    plain, _ = await accounts.create_key("acme/bot")
    assert await verifier.verify(plain) is not None  # now cached
    before = store.queries
    flipped = plain[:-1] + ("a" if plain[-1] != "a" else "b")
    for near in (flipped, plain + "x", plain[:-1], " " + plain, plain.upper(),
                 plain + "x" * 100_000, ("x" * 100_000) + plain):
        assert await verifier.verify(near) is None, near[:40]
    assert store.queries == before
    assert await verifier.verify(plain) is not None


async def test_revoked_key_stops_on_invalidation_and_is_negatively_cached(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    plain, row = await accounts.create_key("acme/bot")
    assert await verifier.verify(plain) is not None
    await accounts.revoke_key(row.id)
    assert await verifier.verify(plain) is not None  # cached: not told yet
    verifier.invalidated(row.hash.encode())
    assert await verifier.verify(plain) is None
    before = store.queries
    for _ in range(200):
        assert await verifier.verify(plain) is None
    assert store.queries == before  # refused keys are remembered


async def test_revocation_without_a_broadcast_lands_within_the_ttl(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    _, accounts, verifier = setup
    plain, row = await accounts.create_key("acme/bot")
    assert await verifier.verify(plain) is not None
    await accounts.revoke_key(row.id)
    await asyncio.sleep(0.6)  # ttl 0.5 s
    assert await verifier.verify(plain) is None


async def test_expiry_is_checked_on_every_use(setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    _, accounts, verifier = setup
    plain, _ = await accounts.create_key("acme/bot", expires_at=time.time() + 2)
    verifier.found.ttl = 60
    assert await verifier.verify(plain) is not None
    await asyncio.sleep(2.2)
    assert await verifier.verify(plain) is None


async def test_store_down_cached_keys_still_work(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    verifier.found.ttl = 60
    plain, _ = await accounts.create_key("acme/bot")
    unseen, _ = await accounts.create_key("acme/bot")
    assert await verifier.verify(plain) is not None
    await store.engine.dispose()
    broken = Store("postgresql+asyncpg://postgres@127.0.0.1:1/test")  # nothing listens
    verifier.accounts = Accounts(broken, accounts.keys)
    try:
        assert await verifier.verify(plain) is not None
        with pytest.raises(StoreUnavailable):
            await verifier.verify(unseen)
    finally:
        await broken.aclose()


async def test_everything_message_expires_found_keys_and_forgets_refused_ones(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    verifier.found.ttl, verifier.found.stale = 60, 3600
    plain, _ = await accounts.create_key("acme/bot")
    await verifier.verify(plain)
    verifier.refused.put("x", True)
    verifier.invalidated(EVERYTHING)
    assert len(verifier.refused) == 0
    digest = accounts.keys.digest(plain)
    assert verifier.found.get(digest) is MISS  # no longer fresh: the next use asks the store
    before = store.queries
    assert await verifier.verify(plain) is not None
    assert store.queries - before == 1
    verifier.refused.put("x", True)
    verifier.invalidated(None)  # the state layer lost messages: re-check everything
    assert len(verifier.refused) == 0 and verifier.found.get(digest) is MISS


def test_ttl_cache_keeps_expired_entries_as_stale_for_a_while() -> None:
    now = [0.0]
    cache: TTLCache[int] = TTLCache(10, 10, clock=lambda: now[0], stale=100)
    cache.put("a", 1)
    now[0] = 50
    assert cache.get("a") is MISS and cache.get_stale("a") == 1  # expired, still kept
    cache.put("b", 2)
    cache.expire_all()
    assert cache.get("b") is MISS and cache.get_stale("b") == 2
    now[0] = 111
    assert cache.get_stale("a") is MISS and cache.get("a") is MISS  # 10 + 100 s: forgotten
    assert cache.get_stale("b") == 2
    cache.drop("b")
    assert cache.get_stale("b") is MISS
    plain: TTLCache[int] = TTLCache(10, 10, clock=lambda: now[0])  # stale 0: nothing kept
    plain.put("c", 3)
    now[0] += 10
    assert plain.get_stale("c") is MISS and len(plain) == 1
    assert plain.get("c") is MISS and len(plain) == 0


async def test_store_down_keys_seen_lately_are_served_stale_for_key_stale_ttl(
        setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    now = [time.time()]
    served: list[int] = []
    verifier.found = TTLCache(100, 10, clock=lambda: now[0], stale=60)
    verifier.on_stale = lambda: served.append(1)
    plain, row = await accounts.create_key("acme/bot")
    revoked, revoked_row = await accounts.create_key("acme/bot")
    unseen, _ = await accounts.create_key("acme/bot")
    assert await verifier.verify(plain) is not None
    assert await verifier.verify(revoked) is not None
    await accounts.revoke_key(revoked_row.id)
    verifier.invalidated(revoked_row.hash.encode())  # the announcement arrived before the outage
    await store.engine.dispose()
    broken = Store("postgresql+asyncpg://postgres@127.0.0.1:1/test")  # nothing listens
    verifier.accounts = Accounts(broken, accounts.keys)
    try:
        now[0] += 30  # the entry is 30 s old: expired (ttl 10), within the stale 60 s
        for _ in range(3):
            record = await verifier.verify(plain)
            assert record is not None and record.id == row.id
        assert len(served) == 3
        with pytest.raises(StoreUnavailable):  # revoked and announced: not kept as stale
            await verifier.verify(revoked)
        with pytest.raises(StoreUnavailable):  # never seen: nothing to fall back on
            await verifier.verify(unseen)
        now[0] += 41  # 71 s: past ttl + stale
        with pytest.raises(StoreUnavailable):
            await verifier.verify(plain)
    finally:
        await broken.aclose()


async def test_last_used_is_batched(setup: tuple[Store, Accounts, KeyVerifier]) -> None:
    store, accounts, verifier = setup
    plain, row = await accounts.create_key("acme/bot")
    for _ in range(100):
        await verifier.verify(plain)
    before = store.queries
    await verifier.flush_last_used()
    assert store.queries - before <= 3  # one UPDATE (plus transaction statements), not 100
    info = (await accounts.key_infos(project="acme/bot"))[0]
    assert info.last_used_at is not None and abs(info.last_used_at - time.time()) < 5
