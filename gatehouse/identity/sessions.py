"""Web sessions in the state layer, with an idle timeout and an absolute lifetime.

The cookie holds a random id (256 bits); the state layer holds only its SHA-256, so a dump of
Redis hands out no usable session. Signing in always makes a new id (no fixation); each user's
session hashes are indexed so "sign out everywhere" can end them all.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson

from gatehouse.state.base import State

# last-seen is written at most this often (and at least every tenth of the idle timeout)
TOUCH_EVERY_SECONDS = 60.0


@dataclass(slots=True)
class WebSession:
    user_id: str
    created: float
    last_seen: float
    csrf: str

    def expires_at(self, idle: float, absolute: float) -> float:
        return min(self.last_seen + idle, self.created + absolute)


ENDED_MEMORY_SECONDS = 7 * 86400  # how long a browser is told why its session was ended


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionManager:
    def __init__(self, state: State, *, idle_seconds: float, absolute_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.idle = idle_seconds
        self.absolute = absolute_seconds
        self.clock = clock

    def _ttl(self, session: WebSession, now: float) -> float:
        return max(1.0, session.expires_at(self.idle, self.absolute) - now)

    async def create(self, user_id: str) -> tuple[str, WebSession]:
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = WebSession(user_id, now, now, secrets.token_urlsafe(24))
        ttl = self._ttl(session, now)
        await self.state.put(f"sess:{_hash(session_id)}", orjson.dumps(asdict(session)), ttl)
        await self.state.set_add(f"usess:{user_id}", _hash(session_id), self.absolute)
        return session_id, session

    async def load(self, session_id: str) -> WebSession | None:
        """The live session, or None when it never existed, has expired or was ended."""
        if not session_id or len(session_id) > 128:
            return None
        key = f"sess:{_hash(session_id)}"
        raw = await self.state.get(key)
        if raw is None:
            return None
        session = WebSession(**orjson.loads(raw))
        now = self.clock()
        if now >= session.expires_at(self.idle, self.absolute):
            await self.state.delete(key)
            return None
        if now - session.last_seen >= min(TOUCH_EVERY_SECONDS, self.idle / 10):
            session.last_seen = now
            await self.state.put(key, orjson.dumps(asdict(session)), self._ttl(session, now))
        return session

    async def end(self, session_id: str) -> None:
        digest = _hash(session_id)
        raw = await self.state.get(f"sess:{digest}")
        await self.state.delete(f"sess:{digest}")
        if raw is not None:
            await self.state.set_remove(f"usess:{orjson.loads(raw)['user_id']}", digest)

    async def end_all(self, user_id: str, why: str | None = None) -> int:
        """Sign a user out everywhere; returns how many sessions ended. ``why`` (an
        administrator's ``signed_out_by_admin`` or ``account_disabled``) is kept for a while
        beside each ended session, so its browser is told the truth, not "expired"."""
        digests = await self.state.set_members(f"usess:{user_id}")
        ended = await self.state.delete(*(f"sess:{d}" for d in digests))
        await self.state.delete(f"usess:{user_id}")
        if why is not None:
            for digest in digests:
                await self.state.put(f"sessend:{digest}", why.encode(), ENDED_MEMORY_SECONDS)
        return ended

    async def ended_why(self, session_id: str) -> str | None:
        """Why a session that is gone was ended by an administrator, if it was."""
        if not session_id or len(session_id) > 128:
            return None
        raw = await self.state.get(f"sessend:{_hash(session_id)}")
        return raw.decode() if raw is not None else None
