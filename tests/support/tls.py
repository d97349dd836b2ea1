"""One TLS context for the test process's HTTP clients that ask for the default one.

httpx (and httpx2, which the openai SDK uses) builds a new context for every client it makes,
reading the system's or certifi's bundle of ~150 certificates: ~20 ms of CPU, ~50 ms on a
loaded 2-core machine. The tests make thousands of clients — every ``openai.OpenAI``, every
``httpx.get`` while a gateway starts (a poll each 50 ms) — all of them speaking plain HTTP to
127.0.0.1, so that CPU bought nothing and slowed the processes under test. A context is safe
to share between clients once it is made (encode/httpx#2609); only the default one
(``verify=True``, no client certificate) is shared, keyed by the environment variables read
for it, and any other ``verify`` or ``cert`` gets a context of its own as before. The
gateway's processes are not touched."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

# the modules whose transports make a client's context (httpx2: the openai SDK's)
TRANSPORTS = ("httpx._transports.default", "httpx2._transports.default")


def sharing(made: Callable[..., Any]) -> Callable[..., Any]:
    shared: dict[tuple[bool, str | None, str | None], Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None:
            return made(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in shared:
            shared[key] = made(verify=verify, cert=cert, trust_env=trust_env)
        return shared[key]

    create_ssl_context.shares = True  # type: ignore[attr-defined]
    return create_ssl_context


def share_default_context() -> None:
    for name in TRANSPORTS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # not installed: nothing of it to share
            continue
        if not getattr(module.create_ssl_context, "shares", False):
            module.create_ssl_context = sharing(module.create_ssl_context)
