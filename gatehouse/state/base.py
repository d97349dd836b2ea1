"""The state protocol: short-lived values, sets, and broadcast messages between replicas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

# called with each message on a channel, or with None when messages may have been missed
# (the connection to the state layer was lost and is back): drop whatever they would update
Handler = Callable[[bytes | None], None]


class StateError(Exception):
    """The state layer could not be reached or failed; the cause is in ``__cause__``."""


class Backoff(NamedTuple):
    """One counter of :meth:`State.attempt`: ``free`` attempts go unhindered; each further
    one locks the counter for ``first`` seconds, doubling each time up to ``longest``; the
    count is forgotten ``memory`` seconds after its last attempt."""

    key: str
    free: int
    first: float
    longest: float
    memory: float


def lock_seconds(attempts: int, counter: Backoff) -> float:
    """How long ``attempts`` lock ``counter`` for (0.0: not at all); attempt.lua does the
    same sum for Redis."""
    over = attempts - counter.free
    if over <= 0:
        return 0.0
    return min(counter.longest, counter.first * 2.0 ** min(over - 1, 64))


class State(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def put_new(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` holds nothing live; True when it was stored. Atomic
        across replicas, so a one-time token (a challenge nonce) is claimed exactly once."""
        ...

    async def delete(self, *keys: str) -> int:
        """Remove keys (values or sets); returns how many existed."""
        ...

    async def attempt(self, counters: Sequence[Backoff], now: float) -> tuple[bool, float]:
        """One attempt against every counter, atomically across replicas. If any is locked at
        ``now``: nothing changes, and ``(False, seconds until the last lock ends)``. Otherwise
        each counts the attempt (and may lock), and ``(True, seconds the counters are now
        locked for)`` — 0.0 when none is. Times are the caller's clock (``now``)."""
        ...

    async def refund(self, counter: Backoff) -> None:
        """Take one attempt back off a counter; back within its free attempts, its lock is
        lifted too (otherwise an earlier failure's lock stands)."""
        ...

    async def set_add(self, key: str, member: str, ttl: float) -> None: ...

    async def set_remove(self, key: str, member: str) -> None: ...

    async def set_members(self, key: str) -> set[str]: ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...
