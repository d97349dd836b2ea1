"""Request ids: ``req_`` + 26 Crockford base32 characters (48-bit ms time, 80 random bits).

They sort by creation time, like ULIDs, so a log sorted by id is sorted by arrival."""

from __future__ import annotations

import os
import time

from gatehouse.errors import InvalidClientRequestId

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
CLIENT_ID_MAX = 512


def new_request_id() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    out = [""] * 26
    for i in range(25, -1, -1):
        out[i] = _ALPHABET[value & 31]
        value >>= 5
    return "req_" + "".join(out)


def request_id_time(request_id: str) -> float:
    """Seconds since the epoch at which ``request_id`` was made."""
    value = 0
    for char in request_id[4:]:
        value = value * 32 + _ALPHABET.index(char)
    return (value >> 80) / 1000


def check_client_request_id(value: str) -> str:
    """Accept printable ASCII up to 512 characters, as OpenAI does; refuse anything else."""
    if not value or len(value) > CLIENT_ID_MAX or not all(" " <= c <= "~" for c in value):
        raise InvalidClientRequestId(
            "X-Client-Request-Id must be 1 to 512 printable ASCII characters.",
            param="X-Client-Request-Id")
    return value
