"""Conversations in the store, on SQLite and PostgreSQL: owned lookups, find with wildcard
characters taken literally, bounded pages, regenerate's cut, delete with its messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.identity.keys import KeyMaterial
from gatehouse.identity.passwords import hash_password
from gatehouse.store.accounts import Accounts
from gatehouse.store.conversations import PAGE_MAX, Conversations
from gatehouse.store.db import Store
from tests.support.services import migrated_store


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for s in migrated_store(request.param, str(tmp_path)):
        yield s


async def two_users(store: Store) -> tuple[str, str]:
    accounts = Accounts(store, KeyMaterial(b"conversation-test-secret-0123456789abc"))
    digest = hash_password("a long enough password")
    a = await accounts.create_user("a@example.com", digest, None, "free")
    b = await accounts.create_user("b@example.com", digest, None, "free")
    return a.id, b.id


async def test_conversations_are_their_owners_alone(store: Store) -> None:
    a, b = await two_users(store)
    chats = Conversations(store)
    mine, made = await chats.create(a, "100% sure_thing", "demo",
                                    [("user", "hello", "done"), ("assistant", "", "streaming")],
                                    "req_1")
    assert [m.seq for m in made] == [0, 1] and made[1].request_id == "req_1"
    more = await chats.append(mine.id, [("user", "more", "done")])
    assert more[0].seq == 2
    await chats.save(made[1].id, "hi there", "done")
    assert await chats.get(b, mine.id) is None and await chats.message(b, made[1].id) is None
    assert not await chats.rename(b, mine.id, "stolen") and not await chats.delete(b, mine.id)
    assert (await chats.message(a, made[1].id)).content == "hi there"  # type: ignore[union-attr]
    # LIKE's wildcards are searched for as themselves
    assert [c.id for c in await chats.page(a, find="100%")] == [mine.id]
    assert await chats.page(a, find="1%0") == [] and await chats.page(a, find="sure%") == []
    assert [c.id for c in await chats.page(a, find="HELLO")] == [mine.id]  # in a message
    assert await chats.page(b, find="hello") == []

    # regenerate: drop from the answer on, then a new answer
    again = await chats.append(mine.id, [("assistant", "", "streaming")], drop_from=1)
    assert again[0].seq == 1
    assert [(m.seq, m.role, m.content) for m in await chats.messages(mine.id)] == [
        (0, "user", "hello"), (1, "assistant", "")]
    assert again[0].id != made[1].id
    assert await chats.delete(a, mine.id)
    assert await chats.messages(mine.id) == [] and await chats.get(a, mine.id) is None


async def test_pages_are_newest_first_and_bounded(store: Store) -> None:
    a, _ = await two_users(store)
    chats = Conversations(store)
    for i in range(5):
        await chats.create(a, f"chat {i}", "demo")
    first = await chats.page(a, limit=2)
    assert [c.title for c in first] == ["chat 4", "chat 3"]
    rest = await chats.page(a, limit=10, before=first[-1].updated_at)
    assert [c.title for c in rest] == ["chat 2", "chat 1", "chat 0"]
    assert len(await chats.page(a, limit=10**9)) == 5 and PAGE_MAX == 100
    assert len(await chats.page(a, limit=-5)) == 1
    assert await chats.get(a, "x" * 1000) is None
