"""What the doctor makes of the API path's answers, from real servers on 127.0.0.1: a key that
cannot be sent is the user's (never the service's), and an answer that is not the API's — a
proxy's sign-in page, a redirect, a blank or broken body — is never "No problem found"."""

from __future__ import annotations

import gzip
import http.server

import httpx
import pytest

from gatehouse.doctor.api import check_api
from tests.support.doctor import Handler, answer, chunked, hostile, run_doctor

MiB = 1024 * 1024

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


# -- answers that are not the API's -----------------------------------------------------------

def page(status: int, body: bytes = b"", **headers: str) -> Handler:
    return answer(body, status, {k.replace("_", "-"): v for k, v in headers.items()},
                  length="content_length" not in headers)


def declared_blank(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("content-length", str(200 * MiB))
    h.end_headers()
    try:
        for _ in range(3200):
            h.wfile.write(b" " * 65536)
    except OSError:
        pass  # the reader stopped early, as it should


SIGN_IN = (b"<!doctype html><html><head><title>Acme \x1b[31mNetwork Sign-in</title></head>"
           b"<body>Sign in to continue</body></html>")
GZIP_BLANK = gzip.compress(b" " * (20 * MiB))


@pytest.mark.parametrize(("models", "said"), [
    (page(200, SIGN_IN, content_type="text/html"),
     "text/html, not JSON; page title \u201cAcme [31mNetwork Sign-in\u201d"),
    (page(302, location="https://sso.example.com/login?next=%2Fv1"),
     "HTTP 302, which is not an answer; no content type; a redirect to https://sso.example.com"),
    (page(307, location="/login"), "HTTP 307, which is not an answer"),
    (page(204), "HTTP 204 with no body"),
    (page(200, b'{"data": [', content_type="application/json"), "not JSON"),
    (page(200, b'[{"id": "demo"}]', content_type="application/json"),
     "JSON that is not an object; content-type application/json; it begins \u201c[{"),
    (page(200, b"{}", content_type="application/json"), "an object without 'data'"),
    (page(200, b'{"error": {"message": "sign in first"}}'), "with an error: sign in first"),
    (page(200, b"\xff\xfe<\x00h\x00t\x00m\x00l\x00>\x00"), "not JSON"),  # UTF-16, odd bytes
    (chunked(b" " * 65536, 3200), "more than 4,194,304 bytes of blank space"),  # 200 MiB
    (declared_blank, "more than 65,536 bytes of blank space"),  # 200 MiB, said up front
    (page(200, GZIP_BLANK, content_encoding="gzip"), "more than 4,194,304 bytes of blank"),
])
async def test_an_answer_that_is_not_the_apis_is_not_ok(models: Handler, said: str) -> None:
    """Each was ``ok`` (any status below 400): the doctor said "No problem found", exit 0."""
    chats: list[str] = []

    def chat(h: http.server.BaseHTTPRequestHandler) -> None:
        chats.append(h.path)
        answer(CHAT)(h)

    with hostile({"/v1/models": models, "/v1/chat/completions": chat,
                  "/v1/usage": answer(b'{"org": "acme"}')}) as base:
        async with httpx.AsyncClient(timeout=3) as client:
            api = await check_api(client, base + "/v1", KEY, None, deadline=20)
    listed = api.calls[-1]
    assert (listed.endpoint, listed.outcome) == ("GET /v1/models", "not_api"), listed
    assert listed.message is not None and said in listed.message, listed.message
    assert "\x1b" not in listed.message and listed.seconds < 15
    assert chats == [] and api.models == []


async def test_a_completion_that_is_not_one_is_the_main_call() -> None:
    routes = {"/v1/models": answer(MODELS),
              "/v1/chat/completions": page(200, SIGN_IN, content_type="text/html"),
              "/v1/usage": page(200, SIGN_IN, content_type="text/html")}
    with hostile(routes) as base:
        async with httpx.AsyncClient(timeout=3) as client:
            api = await check_api(client, base + "/v1", KEY, None)
    assert [c.outcome for c in api.calls] == ["ok", "not_api"]
    assert api.main is not None and api.main.endpoint == "POST /v1/chat/completions"
    assert api.account is None  # a page is no account either


async def test_a_long_model_list_is_still_read_as_far_as_it_goes() -> None:
    """A JSON object over the 4 MiB read is given the benefit of the doubt."""
    routes = {"/v1/models": chunked(b'{"data": [' + b" " * 65526, 100),
              "/v1/chat/completions": answer(CHAT)}
    with hostile(routes) as base:
        async with httpx.AsyncClient(timeout=3) as client:
            api = await check_api(client, base + "/v1", KEY, "demo")
    assert [c.outcome for c in api.calls] == ["ok", "ok"]


@pytest.mark.parametrize("models", [page(200, SIGN_IN, content_type="text/html"),
                                   page(302, location="https://sso.example.com/login")])
def test_the_doctor_says_it_is_not_the_api(models: Handler) -> None:
    with hostile({"/v1/models": models, "/v1/usage": answer(b"{}")}) as base:
        run = run_doctor(base, "--api-key", KEY, *ONLY_API)
    verdict, who = run.report["verdict"], run.report["me_or_them"]
    assert run.code == 22, run.stderr
    assert (verdict["outcome"], verdict["branch"]) == ("not_api", "network_policy")
    assert verdict["headline"].startswith("Not the API answering GET /v1/models: answered HTTP")
    assert who["side"] == "you" and "not answered by the API" in who["line"]
    assert "No problem found" not in run.stderr + str(run.report)
    assert "\x1b" not in run.stderr + str(run.report)
    assert "something other than the API" in run.report["checks"]["health"]["unread"]
