"""The tests' HTTP clients share one default TLS context (tests/support/tls.py), and any
other verification setting still gets a context of its own."""

from __future__ import annotations

import ssl

import httpx
import openai

from tests.support import tls


def context_of(client: httpx.Client) -> ssl.SSLContext:
    return client._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]


def test_default_clients_share_one_context_and_others_keep_their_own() -> None:
    tls.share_default_context()
    tls.share_default_context()  # twice: wrapped once
    with httpx.Client() as a, httpx.Client() as b, httpx.Client(verify=False) as loose:
        assert context_of(a) is context_of(b)
        assert context_of(a).verify_mode == ssl.CERT_REQUIRED
        assert context_of(loose) is not context_of(a)
        assert context_of(loose).verify_mode == ssl.CERT_NONE
    own = ssl.create_default_context()
    with httpx.Client(verify=own) as given:
        assert context_of(given) is own
    first = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1/v1")
    second = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1/v1")
    try:
        assert context_of(first._client) is context_of(second._client)  # httpx2's
    finally:
        first.close()
        second.close()
