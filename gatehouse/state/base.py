"""The state protocol: short-lived values, sets, and broadcast messages between replicas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# called with each message on a channel, or with None when messages may have been missed
# (the connection to the state layer was lost and is back): drop whatever they would update
Handler = Callable[[bytes | None], None]


class StateError(Exception):
    """The state layer could not be reached or failed; the cause is in ``__cause__``."""


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

    async def set_add(self, key: str, member: str, ttl: float) -> None: ...

    async def set_remove(self, key: str, member: str) -> None: ...

    async def set_members(self, key: str) -> set[str]: ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...
