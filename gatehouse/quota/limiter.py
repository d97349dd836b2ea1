"""The limiter protocol: one atomic check-and-reserve over every counter a request touches.

A counter is one limit in one window (``q:key:key_123:tokens:m28391820``). It holds what was
*committed* (settled usage) and what is *reserved* by requests still running; a reservation
carries an expiry, so a replica that dies mid-request leaks nothing past that time.

    reserve(rid, asks) ─ all fit? ─► every counter += its reservation; allowed
                       └ one does not ─► nothing changes; the decision says which
    settle(rid, actuals) ─► each counter: drop the reservation, commit the actual amount
    release(rid, keys) ─► drop the reservations, commit nothing

Implementations: ``MemoryLimiter`` (one process) and ``RedisLimiter`` (one round trip per call,
Lua), run through one conformance suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Ask:
    key: str         # the counter
    limit: int       # its ceiling in this window
    amount: int      # what this request reserves (0: only read it, for the headers)
    expires: float   # the window's end (Unix s): the counter is dropped after it


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    used: tuple[int, ...]   # per ask, committed + reserved before this request
    refused: int | None     # index of the first ask that did not fit


@dataclass(frozen=True, slots=True)
class Settle:
    key: str
    actual: int      # what to commit (0 = release)
    expires: float


class LimiterError(Exception):
    """The shared limiter cannot be reached; the quota stage applies its failure policy."""


class Limiter(Protocol):
    name: str

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float) -> Decision: ...

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None: ...

    async def usage(self, keys: list[str], now: float) -> list[int]: ...

    async def ping(self) -> None:
        """One round trip, or LimiterError."""

    async def aclose(self) -> None: ...
