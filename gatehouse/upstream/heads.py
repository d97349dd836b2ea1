"""What may go in a request head the gateway writes to a backend: header names and values
that are one line each (no line break or NUL: a value with CR LF would start a header, or a
request, of its own), in Latin-1 as HTTP/1.1 carries them."""

from __future__ import annotations

_BREAKS = frozenset("\r\n\0")
_NOT_IN_NAME = _BREAKS | frozenset(" \t:")


def check_header(name: str, value: str) -> None:
    """ValueError saying why a header cannot be written as one line of a request head."""
    if not name or not name.isascii() or any(c in _NOT_IN_NAME for c in name):
        raise ValueError(f"header name {name!r} cannot be sent")
    if any(c in _BREAKS for c in value):
        raise ValueError(f"the value of header {name!r} holds a line break or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"the value of header {name!r} is not Latin-1") from None


def head_lines(headers: dict[str, str]) -> bytes:
    """Header lines for a head; each was checked by :func:`check_header`."""
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
