"""Hot shared state behind one protocol: in-process memory (one replica) or Redis (many)."""

from __future__ import annotations

from gatehouse.state.base import Backoff, State, StateError


def open_state(url: str) -> State:
    """``memory://`` or a Redis URL (``redis://host:6379/0``, ``rediss://…``, ``unix://…``)."""
    if url.startswith("memory://"):
        from gatehouse.state.memory import MemoryState

        return MemoryState()
    from gatehouse.state.redis import RedisState

    return RedisState(url)


__all__ = ["Backoff", "State", "StateError", "open_state"]
