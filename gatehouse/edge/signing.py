"""HMAC-SHA256 signatures for what the edge hands a browser and wants back unchanged:
challenges, clearance cookies and the cookie-check marker.

Each use gets its own key (``KeyMaterial.derive``), so a value signed for one use is refused
by every other. Checks are constant-time and do no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes | None:
    """The bytes of unpadded base64url, or None when it is not that."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None


def binding(network: str, user_agent: str) -> str:
    """What a challenge or clearance is bound to: the client network and user agent, hashed
    (the network is not shown back to the browser in the clear)."""
    return b64(hashlib.sha256(f"{network}\n{user_agent}".encode()).digest()[:16])


def same(a: str, b: str) -> bool:
    """Constant-time string equality (bindings, …)."""
    return hmac.compare_digest(a.encode(), b.encode())


class Signer:
    """``sign("text")`` → ``"text.<mac>"``; ``unsign`` gives the text back if the mac fits."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a signing key must be at least 32 bytes")
        self._key = key

    def _mac(self, text: str) -> str:
        return b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def sign(self, text: str) -> str:
        return f"{text}.{self._mac(text)}"

    def unsign(self, signed: str, *, max_length: int = 2048) -> str | None:
        if len(signed) > max_length or not signed.isascii():
            return None
        text, dot, mac = signed.rpartition(".")
        if not dot:
            return None
        return text if same(self._mac(text), mac) else None
