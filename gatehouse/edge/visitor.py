"""What the edge knows about one request, and the interface of the human check.

The challenge engineer's code implements :class:`Challenger`; the edge only calls it when the
winning rule says ``challenge`` and the request is on the web path (``api_client`` False)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, Protocol

from gatehouse.context import Reply

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# what the abuse detector counts besides plain requests (see gatehouse/edge/detector.py)
OffenseKind = Literal["unauthorized", "challenge_failed", "signin_failed", "slow_client"]


def has_bearer(headers: dict[str, str]) -> bool:
    """``Authorization: Bearer …`` is present (whether the key is any good is identity's
    business)."""
    return headers.get("authorization", "")[:7].lower() == "bearer "


@dataclass(slots=True)
class Visitor:
    ip: IPAddress
    network: str            # grouped, e.g. "203.0.113.0/24"
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    api_client: bool         # an API path (never challenged), whatever the request carries
    wants_html: bool
    query: str = ""          # the raw query string (mounted pages), for the way back after a check
    request_id: str = ""     # shown on the pages the edge answers with (the challenge)


class Challenger(Protocol):
    """The proof-of-work human check (gatehouse/edge/challenge*.py)."""

    def cleared(self, visitor: Visitor) -> bool:
        """True when the visitor carries a valid clearance (HMAC check only, no I/O)."""
        ...

    async def challenge(self, visitor: Visitor, difficulty: int, ray_id: str, *,
                        rule: str = "") -> Reply:
        """The challenge page (or its fetch/XHR twin) for a visitor without clearance;
        ``rule`` names the rule that asked for it (for metrics)."""
        ...


class OffenseSink(Protocol):
    """Where the challenge code reports failures: ``Edge.offense(visitor, "challenge_failed")``.
    Sync and cheap: it counts in memory and schedules any ban in the background."""

    def offense(self, visitor: Visitor, kind: OffenseKind) -> None: ...
