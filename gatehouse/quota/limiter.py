"""The limiter protocol: one atomic check-and-reserve over every counter a request touches.

A counter is one limit in one window (``q:key:key_123:tokens:m28391820``). It holds what was
*committed* (settled usage), what is *reserved* by requests still running, and the *debt* it
took over from the window before: what that window committed beyond its limit (its own debt
included), fixed when the counter is first used. A reservation carries an expiry, so a
replica that dies mid-request leaks nothing past that time.

    reserve(rid, asks) ─ debt + committed + reserved + ask ≤ limit for all? ─► reserve each
                       └ one does not ─► nothing changes; the decision says which
    settle(rid, actuals) ─► each counter: drop the reservation; commit the actual amount to
                            the window current at settle time (``commit_key``)

Usage beyond a reservation (a prompt the tokenizer under-counted, a backend that ignored
``max_tokens``) is committed all the same; the window it lands in pays it back from the next
one, so over any run of windows the committed total stays within ``windows × limit`` plus the
last window's overshoot (docs/quotas.md).

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
    previous: str | None = None  # the window before's counter, whose overshoot carries in


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
    commit_key: str | None = None  # the counter to commit to, if not ``key`` (a later window)
    commit_expires: float = 0.0


class LimiterError(Exception):
    """The shared limiter cannot be reached; the quota stage applies its failure policy."""


class Limiter(Protocol):
    name: str
    # round trips to a shared limiter so far, by what they carried: "reserve" (a request's
    # check, settles riding along), "settle" (queued settles sent on their own), "read"
    # (usage reads, pings); empty for an in-process limiter
    round_trips: dict[str, int]

    async def reserve(self, rid: str, asks: list[Ask], now: float, ttl: float) -> Decision: ...

    async def settle(self, rid: str, settles: list[Settle], now: float) -> None: ...

    async def usage(self, asks: list[Ask], now: float) -> list[int]:
        """Each counter's debt + committed + reserved (the asks' amounts are not reserved)."""
        ...

    async def ping(self) -> None:
        """One round trip, or LimiterError."""

    async def prepare(self) -> None:
        """At startup: make the first requests as cheap as the rest (Redis: load the script,
        so a burst on a new replica does not meet "no such script" once per connection).
        Never raises: if the limiter cannot be reached, the first request finds out."""

    async def aclose(self) -> None: ...
