"""The clearance cookie: proof that this browser passed the human check, for a while.

The value is ``1.<expires>.<binding>.<mac>``: an expiry (unix seconds), the binding of the
client network and user agent it was earned from, and an HMAC-SHA256 of both under a key
derived from the server secret. Checking it is pure computation — no state, no I/O — so every
replica can check every cookie, and several tabs that each earn one all stay cleared: a newer
cookie never invalidates an older one that is still valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from gatehouse.edge.signing import Signer, same

COOKIE = "gatehouse_clearance"
VERSION = "1"


class Verdict(Enum):
    CLEARED = "cleared"
    MISSING = "missing"
    FORGED = "forged"      # not signed by us: altered, made up, or another server's
    EXPIRED = "expired"
    REBOUND = "rebound"    # ours, but earned on another network or by another user agent


def cookie_values(header: str, name: str) -> list[str]:
    """Every value the Cookie header gives ``name`` (a browser may send several)."""
    out = []
    for part in header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name and value.strip():  # an emptied cookie is no cookie
            out.append(value.strip().strip('"'))
    return out


class Clearances:
    def __init__(self, signer: Signer, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.ttl = ttl
        self.clock = clock

    def mint(self, bound: str) -> str:
        expires = int(self.clock() + self.ttl)
        return self.signer.sign(f"{VERSION}.{expires}.{bound}")

    def check(self, value: str, bound: str) -> Verdict:
        text = self.signer.unsign(value, max_length=256)
        if text is None:
            return Verdict.FORGED
        version, _, rest = text.partition(".")
        expires, _, their_bound = rest.partition(".")
        if version != VERSION or not expires.isdigit():
            return Verdict.FORGED
        if self.clock() >= int(expires):
            return Verdict.EXPIRED
        return Verdict.CLEARED if same(their_bound, bound) else Verdict.REBOUND

    def verdict(self, cookie_header: str, bound: str) -> Verdict:
        """The best verdict over every clearance cookie the browser sent."""
        best = Verdict.MISSING
        for value in cookie_values(cookie_header, COOKIE):
            verdict = self.check(value, bound)
            if verdict is Verdict.CLEARED:
                return verdict
            # an honest reason (expired, moved) beats "forged" when the browser sent several
            if best in (Verdict.MISSING, Verdict.FORGED):
                best = verdict
        return best
