"""Password hashing with argon2id (argon2-cffi's RFC 9106 low-memory profile).

argon2-cffi (with cffi's backend, ~0.5 MB of a worker's RSS) is imported on the first hash or
check, not with this module: every worker imports it for the sign-in page, and most never
see a password."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argon2 import PasswordHasher


@functools.cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; a sign-in form need not


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password has at most {MAX_LENGTH} characters")
    return _hasher().hash(password)


# verified when the email is unknown, so both answers take the same time. Made on first
# need, not at import: a hash takes tens of ms (and 64 MiB) by design, and every CLI command
# and worker that imports this module paid it
_DUMMY: str | None = None


def _dummy() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = _hasher().hash("gatehouse: no such user")
    return _DUMMY


def _verify(stored: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(stored or _dummy(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Check off the event loop (argon2 takes tens of ms by design)."""
    return await asyncio.to_thread(_verify, stored, password)
