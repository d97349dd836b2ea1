"""The web chat's gateway for tests: users of three tiers, a healthy demo model, a model on
the test upstream (to make it fail), one with a single slot (capacity), edge rules by
User-Agent (a ban, a challenge), and small chat limits."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from gatehouse.identity.keys import KeyMaterial
from gatehouse.identity.passwords import hash_password
from gatehouse.store.accounts import Accounts
from gatehouse.store.db import Store
from tests.support.procs import Gateway, Upstream

PASSWORD = "a long enough password"
USERS = {"main@example.com": "plus", "other@example.com": "plus", "tiny@example.com": "tiny",
         "free@example.com": "free"}
BLOCKED_UA = "BlockedBrowser/1.0"
CHALLENGED_UA = "CheckedBrowser/1.0"
MAX_MESSAGE = 2500
MAX_CONVERSATION = 4000


def chat_config(up: Upstream) -> dict[str, Any]:
    return {
        "demo": {"ms_per_token": 25, "reply_tokens": 60},
        "web": {"max_message_chars": MAX_MESSAGE, "max_conversation_chars": MAX_CONVERSATION,
                "max_answer_tokens": 60, "signup": True, "signup_tier": "plus"},
        "upstreams": {"a": {"base_url": up.url + "/v1", "breaker_failures": 50,
                            "breaker_min_requests": 50}},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]},
                   "busy": {"backends": [{"upstream": "a", "model": "test-model"}],
                            "max_concurrency": 1}},
        "tiers": {
            "free": {"kind": "web", "priority": "low", "models": ["demo", "busy"]},
            "plus": {"kind": "web"},
            "tiny": {"kind": "web", "limits": {"response_tokens_per_hour": 100}},
            "standard": {"kind": "api"}},
        "admission": {"classes": {"low": {"queue_timeout": 1, "max_queue": 0},
                                  "normal": {"queue_timeout": 5, "max_queue": 50},
                                  "high": {"queue_timeout": 5, "max_queue": 50}}},
        "edge": {"rules": [
            {"action": "deny", "user_agent": "^BlockedBrowser", "name": "blocked-browser"},
            {"action": "challenge", "user_agent": "^CheckedBrowser", "name": "checked",
             "difficulty": 8}]},
    }


def create_users(gw: Gateway, database_url: str | None = None) -> None:
    """The users, written straight into the gateway's store (its own SQLite file unless
    ``database_url`` is given), as ``gatehouse users create`` does, without a process and a
    password hash per user."""

    async def create() -> None:
        store = Store(database_url or f"sqlite+aiosqlite:///{gw.db_path}")
        accounts = Accounts(store, KeyMaterial(b"users are not keys: any secret will do"))
        digest = hash_password(PASSWORD)
        try:
            for email, tier in USERS.items():
                await accounts.create_user(email, digest, None, tier)
        finally:
            await store.aclose()

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result(timeout=60)


class ChatClient:
    """A signed-in person, over HTTP: the session cookie and the page's CSRF token."""

    def __init__(self, gw: Gateway, email: str) -> None:
        self.http = httpx.Client(base_url=gw.url, timeout=30)
        form = self.http.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token is not None
        signed = self.http.post("/login", data={"csrf": token.group(1), "email": email,
                                                "password": PASSWORD, "next": "/"})
        assert signed.status_code == 303, signed.text
        self.data = page_data(self.http.get("/").text)
        self.csrf: str = self.data["csrf"]

    def send(self, **body: Any) -> httpx.Response:
        """POST /chat/send, read whole (the events, or the error)."""
        return self.http.post("/chat/send", json={"model": "demo", **body},
                              headers={"x-csrf-token": self.csrf})

    def close(self) -> None:
        self.http.close()


def page_data(html: str) -> dict[str, Any]:
    found = re.search(r'id="chat-data">(.*?)</script>', html)
    assert found is not None, html[:500]
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        name = re.search(r"^event: (.*)$", block, re.MULTILINE)
        data = re.search(r"^data: (.*)$", block, re.MULTILINE)
        if name and data:
            out.append((name.group(1), json.loads(data.group(1))))
    return out


def answer_of(text: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The meta event, the whole answer text and the end event of a send's events."""
    found = events(text)
    assert found and found[0][0] == "meta", text[:500]
    assert found[-1][0] == "end", text[-500:]
    return found[0][1], "".join(d["text"] for n, d in found if n == "delta"), found[-1][1]
