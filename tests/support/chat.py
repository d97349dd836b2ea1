"""The web chat's gateway for tests: users of three tiers, a healthy demo model, a model on
the test upstream (to make it fail), one with a single slot (capacity), edge rules by
User-Agent (a ban, a challenge), and small chat limits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import httpx

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
                "max_answer_tokens": 60},
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
        "edge": {"clearance_ttl": 4, "rules": [
            {"action": "deny", "user_agent": "^BlockedBrowser", "name": "blocked-browser"},
            {"action": "challenge", "user_agent": "^CheckedBrowser", "name": "checked",
             "difficulty": 8}]},
    }


def create_users(gw: Gateway) -> None:
    for email, tier in USERS.items():
        subprocess.run([sys.executable, "-m", "gatehouse", "users", "create", email,
                        "--tier", tier, "--password-stdin", "--config", str(gw.config_path)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                       timeout=60)


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
