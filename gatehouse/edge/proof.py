"""The proof of work: a signed, expiring puzzle and the check of its answer.

A puzzle is a token the server signs: a random nonce, the difficulty, when it was issued and
when it expires, the binding (client network + user agent, hashed) and the rule that asked
for it. The browser finds a ``counter`` such that ``SHA-256(token || counter)`` — the token's
text followed by the counter in decimal — starts with ``difficulty`` zero bits; on average
that takes ``2**difficulty`` hashes, and checking it takes one.

The token carries everything needed to check it, so no state is kept per puzzle issued; only
a solved nonce is written down (single use, see :mod:`gatehouse.edge.challenge`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gatehouse.edge.signing import Signer, b64, unb64

VERSION = 1
MAX_DIFFICULTY = 32
MAX_COUNTER_DIGITS = 16  # below 2**53: what a browser counts exactly


@dataclass(frozen=True, slots=True)
class Puzzle:
    nonce: str
    difficulty: int
    issued: int
    expires: int
    bound: str
    rule: str


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def solves(token: str, counter: str, difficulty: int) -> bool:
    """True when ``counter`` (decimal, as the browser sent it) answers the puzzle ``token``."""
    if not counter.isdigit() or not counter.isascii() or len(counter) > MAX_COUNTER_DIGITS:
        return False
    digest = hashlib.sha256((token + counter).encode("ascii")).digest()
    return leading_zero_bits(digest) >= difficulty


class Puzzles:
    """Issues puzzles and opens the tokens it issued (a forged or altered one opens to None)."""

    def __init__(self, signer: Signer, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.ttl = ttl
        self.clock = clock

    def issue(self, bound: str, difficulty: int, rule: str) -> tuple[str, Puzzle]:
        if not 0 <= difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty must be 0..{MAX_DIFFICULTY} bits")
        now = int(self.clock())
        puzzle = Puzzle(secrets.token_hex(16), difficulty, now, now + max(1, round(self.ttl)),
                        bound, rule)
        body = orjson.dumps([VERSION, puzzle.nonce, puzzle.difficulty, puzzle.issued,
                             puzzle.expires, puzzle.bound, puzzle.rule])
        return self.signer.sign(b64(body)), puzzle

    def open(self, token: str) -> Puzzle | None:
        """The puzzle this server signed into ``token``, expired or not; None for anything
        else (altered, forged, from another secret, or not a token at all)."""
        text = self.signer.unsign(token)
        raw = unb64(text) if text is not None else None
        if raw is None:
            return None
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(fields, list) or len(fields) != 7 or fields[0] != VERSION:
            return None
        _, nonce, difficulty, issued, expires, bound, rule = fields
        if not (isinstance(nonce, str) and isinstance(difficulty, int)
                and isinstance(issued, int) and isinstance(expires, int)
                and isinstance(bound, str) and isinstance(rule, str)):
            return None
        return Puzzle(nonce, difficulty, issued, expires, bound, rule)

    def expired(self, puzzle: Puzzle) -> bool:
        return self.clock() >= puzzle.expires
