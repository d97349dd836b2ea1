"""What the doctor makes of the API path's answers, from real servers on 127.0.0.1: a key that
cannot be sent is the user's (never the service's), and an answer that is not the API's — a
proxy's sign-in page, a redirect, a blank or broken body — is never "No problem found"."""

from __future__ import annotations

import http.server

import pytest

from tests.support.doctor import answer, hostile, run_doctor

KEY = "gh-demo-" + "k" * 40
MODELS = b'{"object": "list", "data": [{"id": "demo", "object": "model"}]}'
CHAT = b'{"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": ' \
       b'{"role": "assistant", "content": "p"}, "finish_reason": "length"}]}'
ONLY_API = ("--skip", "status", "--skip", "network", "--skip", "web")


@pytest.mark.parametrize(("key", "said"), [
    (KEY + "\r", "ends in a carriage return (CR)"),
    (KEY + "\n", "ends in a line feed (LF)"),
    ("gh-dé" + "k" * 40, "(U+00E9) at character 5"),
    ("\u201c" + KEY + "\u201d", "starts with the character"),
    (KEY[:10] + "\x01" + KEY[10:], "a control character (U+0001) at character 11"),
])
def test_a_key_that_cannot_be_sent_is_the_users(key: str, said: str) -> None:
    """httpx refused a key with a trailing CR (blamed on the service: exit 50) and raised
    UnicodeEncodeError on a non-ASCII one (a traceback)."""
    seen: list[str] = []

    def models(h: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(h.path)
        answer(MODELS)(h)

    with hostile({"/v1/models": models, "/v1/chat/completions": answer(CHAT)}) as base:
        run = run_doctor(base, "--api-key", key, *ONLY_API)
    assert run.code == 30, run.stderr
    verdict, who = run.report["verdict"], run.report["me_or_them"]
    assert verdict["outcome"] == "unauthorized" and verdict["branch"] == "api_side"
    assert said in verdict["headline"] and "cannot be sent" in verdict["headline"]
    assert who["side"] == "you" and "key" in who["line"]
    assert seen == []  # nothing was sent with it
    everything = run.stderr + str(run.report)
    assert KEY not in everything and "\r" not in run.report["checks"]["api"]["key"]
    assert "which cannot be sent" in run.report["checks"]["health"]["unread"]


def test_a_good_key_still_passes() -> None:
    with hostile({"/v1/models": answer(MODELS), "/v1/chat/completions": answer(CHAT),
                  "/v1/usage": answer(b'{"org": "acme"}')}) as base:
        run = run_doctor(base, "--api-key", KEY, *ONLY_API, "--skip", "health")
    assert run.code == 0, run.stderr
    assert run.report["me_or_them"]["line"].startswith("No problem found")
