"""Web sessions on both state backends, against a controllable clock."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from gatehouse.identity.sessions import SessionManager
from gatehouse.state import State, open_state
from tests.support.services import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    s = open_state("memory://" if request.param == "memory" else REDIS_URL)
    yield s
    await s.aclose()


@pytest.fixture
def clock() -> list[float]:
    return [1_700_000_000.0]


@pytest.fixture
def sessions(state: State, clock: list[float]) -> SessionManager:
    return SessionManager(state, idle_seconds=1800, absolute_seconds=86400,
                          clock=lambda: clock[0])


async def test_idle_timeout(sessions: SessionManager, clock: list[float]) -> None:
    sid, session = await sessions.create("user_1")
    assert len(sid) >= 43 and session.csrf
    clock[0] += 1799
    assert (await sessions.load(sid)) is not None  # activity moves the idle deadline
    clock[0] += 1799
    assert (await sessions.load(sid)) is not None
    clock[0] += 1801
    assert await sessions.load(sid) is None
    clock[0] -= 1801
    assert await sessions.load(sid) is None  # and it is gone, not merely hidden


async def test_absolute_lifetime_despite_activity(sessions: SessionManager,
                                                  clock: list[float]) -> None:
    sid, _ = await sessions.create("user_1")
    for _ in range(48):
        clock[0] += 1700
        if clock[0] >= 1_700_000_000.0 + 86400:
            break
        assert await sessions.load(sid) is not None
    clock[0] = 1_700_000_000.0 + 86400
    assert await sessions.load(sid) is None


async def test_every_sign_in_gets_a_new_id(sessions: SessionManager) -> None:
    a, _ = await sessions.create("user_1")
    b, _ = await sessions.create("user_1")
    assert a != b
    assert await sessions.load("attacker-chosen-id") is None
    assert await sessions.load("") is None and await sessions.load("x" * 500) is None


async def test_end_and_end_everywhere(sessions: SessionManager) -> None:
    one, two = f"user_{secrets.token_hex(4)}", f"user_{secrets.token_hex(4)}"
    a, _ = await sessions.create(one)
    b, _ = await sessions.create(one)
    c, _ = await sessions.create(two)
    await sessions.end(a)
    assert await sessions.load(a) is None and await sessions.load(b) is not None
    a2, _ = await sessions.create(one)
    assert await sessions.end_all(one) == 2
    assert await sessions.load(b) is None and await sessions.load(a2) is None
    assert await sessions.load(c) is not None  # other users keep theirs
