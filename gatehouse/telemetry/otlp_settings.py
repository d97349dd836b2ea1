"""Checks of the ``[telemetry] otlp_*`` settings (stdlib only: config.py imports it)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # an HTTP header name (RFC 9110)
MAX_HEADERS = 32


def check_endpoint(value: str) -> str:
    """An http(s) URL of the collector, without credentials, query or fragment; returned
    without its trailing slash (``/v1/traces`` and ``/v1/metrics`` are appended)."""
    try:
        url = urlsplit(value.strip())
        url.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, like "
                         "http://127.0.0.1:4318")
    if url.username is not None or url.password is not None:
        raise ValueError("must not hold credentials: put them in otlp_headers")
    if url.query or url.fragment:
        raise ValueError("must not have a query or a fragment")
    return value.strip().rstrip("/")


def check_headers(value: dict[str, str]) -> dict[str, str]:
    """Header names are HTTP tokens; values printable, on one line. The message never repeats
    a value (they are secrets)."""
    if len(value) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    for name, text in value.items():
        if not _TOKEN.match(name):
            raise ValueError(f"`{name[:64]}` is not a valid HTTP header name")
        if len(text) > 8192 or any(not (c == "\t" or " " <= c <= "~") for c in text):
            raise ValueError(f"the value of `{name}` must be printable ASCII on one line, "
                             "at most 8192 characters")
    return value
