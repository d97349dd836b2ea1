"""API key material: minting, the offline well-formedness check, and the stored hash.

A key reads ``gh-<hint>-<secret><check>``: ``hint`` is up to 10 letters of the project's name
(so a person can tell keys apart), ``secret`` 40 random base-62 characters (238 bits) and
``check`` 6 characters of an HMAC of the rest under the server secret. The check lets a
replica refuse a guessed or mistyped key without a database query — nobody without the
server secret can make a well-formed key — so a flood of random keys costs no SQL.

The store keeps only ``HMAC-SHA256(server secret, key)`` and a display form
(``gh-support-Ab3d…wxYz``); the key itself is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_CHARS = 40
CHECK_CHARS = 6
MAX_KEY_CHARS = 80  # longer is never a key of ours (and is not hashed)
_FORM = re.compile(rf"^gh-([a-z0-9]{{1,10}})-([0-9A-Za-z]{{{SECRET_CHARS + CHECK_CHARS}}})$")


def _base62(data: bytes, length: int) -> str:
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(out)


def hint_for(name: str) -> str:
    hint = re.sub(r"[^a-z0-9]", "", name.lower())[:10]
    return hint or "key"


class KeyMaterial:
    """Everything that needs the server secret: minting, checking and hashing keys."""

    def __init__(self, server_secret: bytes) -> None:
        if len(server_secret) < 32:
            raise ValueError("the server secret must be at least 32 bytes")
        self._secret = server_secret
        self._check_key = hmac.new(server_secret, b"gatehouse key check", hashlib.sha256).digest()

    def _check(self, head: str) -> str:
        return _base62(hmac.new(self._check_key, head.encode(), hashlib.sha256).digest(),
                       CHECK_CHARS)

    def mint(self, hint: str) -> str:
        head = f"gh-{hint_for(hint)}-{''.join(secrets.choice(ALPHABET) for _ in range(SECRET_CHARS))}"
        return head + self._check(head)

    def well_formed(self, key: str) -> bool:
        """True when ``key`` could have been minted here (constant-time in the check)."""
        if len(key) > MAX_KEY_CHARS or _FORM.match(key) is None:
            return False
        head, check = key[:-CHECK_CHARS], key[-CHECK_CHARS:]
        return hmac.compare_digest(self._check(head), check)

    def digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def derive(self, purpose: str) -> bytes:
        """A key of its own for another use of the server secret (signing the edge's
        clearance cookies, …), so no two uses ever share a key."""
        return hmac.new(self._secret, b"gatehouse derive " + purpose.encode(),
                        hashlib.sha256).digest()


def display(key: str) -> str:
    head = key[: key.index("-", 3) + 5]
    return f"{head}…{key[-4:]}"


class SecretUnusable(Exception):
    """The server secret's file cannot be read or made: what is wrong with it, for a person."""


def load_server_secret(configured: str | None, secret_file: str,
                       may_make: Callable[[Path], None]) -> bytes:
    """The configured secret, else the secret file's, else a new one written to that file
    (mode 0600) — once ``may_make(path)`` has not refused (by raising SecretUnusable: a store
    holding keys made with the lost secret; what else it raises passes through). Losing it
    makes every stored key unusable: back the file up. Raises SecretUnusable naming the file
    when it cannot be read or made."""
    if configured:
        return configured.encode()
    path = Path(secret_file)
    with _said(path):
        try:
            return _read(path)
        except FileNotFoundError:
            pass
    may_make(path)
    with _said(path):
        return _make(path)


@contextmanager
def _said(path: Path) -> Iterator[None]:
    """A file's error as one sentence naming it."""
    try:
        yield
    except UnicodeDecodeError:
        raise SecretUnusable(f"the server secret file {path} is not UTF-8 text: it holds one "
                             "line of at least 32 characters") from None
    except IsADirectoryError:
        raise SecretUnusable(f"the server secret file {path} is a directory: name a file "
                             "(made, mode 0600, when it does not exist)") from None
    except OSError as exc:
        raise SecretUnusable(f"cannot read or make the server secret file {path}: "
                             f"{exc.strerror or type(exc).__name__}") from None


def _read(path: Path) -> bytes:
    # empty: another replica's file between its creation and its one write (wait a little)
    for _ in range(20):
        value = path.read_text(encoding="utf-8").strip()
        if value:
            break
        time.sleep(0.05)
    if len(value) < 32:
        raise SecretUnusable(f"the server secret in {path} is {len(value)} characters "
                             "long: it must be at least 32")
    return value.encode()


def _make(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:  # another replica made it while this one looked: use theirs
        try:
            return _read(path)
        except FileNotFoundError:
            # it exists yet cannot be read: a link to nothing (a secret mount that is missing)
            raise SecretUnusable(f"the server secret file {path} is a link to a file that "
                                 "does not exist") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value.encode()
