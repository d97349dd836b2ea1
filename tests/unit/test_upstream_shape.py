"""What counts as an answer of each endpoint (gatehouse/upstream/shape.py); the gateway's
behaviour with such backends is tests/e2e/test_upstream_shape.py."""

from __future__ import annotations

import pytest

from gatehouse.upstream.shape import (
    Malformed,
    check_status,
    check_stream_start,
    check_whole,
    judge,
)


@pytest.mark.parametrize("status", [100, 101, 199, 301, 302, 304, 307, 308])
def test_interim_and_redirect_statuses_are_no_answer(status: int) -> None:
    with pytest.raises(Malformed, match=f"HTTP {status}"):
        check_status(status)


@pytest.mark.parametrize("status", [200, 201, 204, 400, 404, 429, 500, 503])
def test_other_statuses_are_judged_elsewhere(status: int) -> None:
    check_status(status)


@pytest.mark.parametrize(("endpoint", "body"), [
    ("chat.completions", b'{"id": "c", "choices": []}'),
    ("completions", b'{"choices": [{"text": "x"}]}'),
    ("embeddings", b'{"object": "list", "data": [{"embedding": [0.1]}]}'),
    ("responses", b'{"id": "resp_1", "output": []}'),
    ("moderations", b'{"results": [{"flagged": false}]}'),
    ("images.generations", b'{"data": [{"url": "u"}]}'),
    ("audio.speech", b"\xff\xfb binary audio"),  # not a JSON endpoint: passed on as sent
    ("audio.transcriptions", b"plain text transcript"),
])
def test_answers_of_their_endpoint_pass(endpoint: str, body: bytes) -> None:
    check_whole(endpoint, 200, "application/json", body)


@pytest.mark.parametrize(("body", "said"), [
    (b"<html>login</html>", "text/html, not JSON"),
    (b"", "no body"),
    (b"  \n", "no body"),
    (b"[1, 2]", "not an object"),
    (b'{"id": "x"}', "without 'choices'"),
    (b'{"error": {"message": "model overloaded"}}', "an error: model overloaded"),
    (b'{"error": "busy"}', "an error: busy"),
    (b'{"choices": {"0": "not a list"}}', "without 'choices'"),
])
def test_a_chat_success_that_is_not_a_completion_is_malformed(body: bytes, said: str) -> None:
    with pytest.raises(Malformed, match=said):
        check_whole("chat.completions", 200, "text/html; charset=utf-8", body)


@pytest.mark.parametrize(("body", "said"), [
    (b'{"choices": [{"text": "\xff"}]}', "not JSON"),  # not UTF-8, inside the list too
    (b'{"choices": [1,}', "not JSON"),
    (b'{"choices": [NaN]}', "not JSON"),
    (b'{"choices": []} trailing', "not JSON"),
    (b'{"choices": ["\\ud800"]}', "not JSON"),  # a lone surrogate
    (b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),  # nesting
    (b'{"usage": ' + b"{\"a\": " * 100_000 + b"1" + b"}" * 100_001, "not JSON"),
    (b"  \n [1, 2]", "not an object"),
    (b'"text"', "not an object"),
])
def test_what_is_not_json_is_malformed_wherever_it_is(body: bytes, said: str) -> None:
    with pytest.raises(Malformed, match=said):
        check_whole("chat.completions", 200, "application/json", body)


def test_what_the_gateway_uses_is_read_with_the_check() -> None:
    whole = check_whole("responses", 200, "application/json",
                        '{"id": "resp_1", "store": true, "output": [{"text": "é"}], '
                        '"usage": {"input_tokens": 3, "output_tokens": 4}}'.encode())
    assert whole is not None and whole.holds_list("output")
    assert (whole.id, whole.store, whole.usage) == ("resp_1", True,
                                                    {"input_tokens": 3, "output_tokens": 4})
    assert check_whole("audio.speech", 200, "audio/mpeg", b"ID3") is None
    assert check_whole("chat.completions", 400, "application/json", b"{}") is None


def test_a_large_answer_is_checked_without_building_its_list() -> None:
    """An embeddings answer of 512 × 3,072 numbers (~29 MB): parsed into Python floats it
    takes ~3× its size, and the event loop stalls for it; its list is only validated."""
    import tracemalloc

    import orjson

    vector = [0.0123456789012345 * (i % 17 - 8) for i in range(3072)]
    body = orjson.dumps({"object": "list", "model": "m",
                         "data": [{"object": "embedding", "index": i, "embedding": vector}
                                  for i in range(512)],
                         "usage": {"prompt_tokens": 512, "total_tokens": 512}})
    assert len(body) > 25_000_000
    tracemalloc.start()
    try:
        whole = check_whole("embeddings", 200, "application/json", body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert whole is not None and whole.usage == {"prompt_tokens": 512, "total_tokens": 512}
    assert peak < 1_000_000, peak


def test_refusals_are_not_judged_here() -> None:
    check_whole("chat.completions", 400, "text/html", b"<html>bad request</html>")


@pytest.mark.parametrize("start", [b"data: {}\n\n", b"\n\ndata: {}", b": keep-alive\n",
                                   b"event: response.created\n", b"id: 1\n", b"retry: 10\n",
                                   b"", b"   "])
def test_an_event_stream_starts_with_a_field_or_a_comment(start: bytes) -> None:
    check_stream_start(start)


@pytest.mark.parametrize(("start", "what"), [(b'{"choices": []}', "JSON"), (b"  [1]", "JSON"),
                                             (b"<!doctype html>", "HTML"), (b"OK", "text")])
def test_anything_else_is_not_a_stream(start: bytes, what: str) -> None:
    with pytest.raises(Malformed, match=f"with {what}, not an event stream"):
        check_stream_start(start)


def test_the_model_list_and_usage_have_their_shapes_too() -> None:
    check_whole("models", 200, "application/json", b'{"object": "list", "data": []}')
    check_whole("usage", 200, "application/json", b'{"org": "acme"}')
    with pytest.raises(Malformed, match="without 'data'"):
        check_whole("models", 200, "application/json", b"{}")
    with pytest.raises(Malformed, match="not an object"):
        check_whole("usage", 200, "application/json", b"[]")
    with pytest.raises(Malformed, match="an error: no"):
        check_whole("usage", 200, "application/json", b'{"error": "no"}')


@pytest.mark.parametrize(("status", "headers", "body", "more", "said"), [
    (200, {"Content-Type": "text/html"}, b"<html><title>\n Sign\x1b[2J in </title></html>", False,
     "answered HTTP 200 with text/html, not JSON; page title \u201cSign [2J in\u201d"),
    (302, {"Location": "https://sso.example/\x07login"}, b"", False,
     ("answered HTTP 302, which is not an answer; no content type; a redirect to "
      "https://sso.example/ login")),
    (200, {}, b" " * 100, True, "with more than 100 bytes of blank space"),
    (200, {}, b"<p>" + b"x" * 500, True, "not a JSON object; no content type; it begins "
                                          "\u201c<p>" + "x" * 117 + "…\u201d"),
])
def test_judge_says_what_came_back_safely(status: int, headers: dict[str, str], body: bytes,
                                          more: bool, said: str) -> None:
    assert said in str(judge("models", status, headers, body, more))


def test_judge_passes_answers_and_gives_a_long_object_the_benefit_of_the_doubt() -> None:
    assert judge("models", 200, {}, b'{"data": []}') is None
    assert judge("models", 200, {}, b'  {"data": [' + b" " * 100, more=True) is None
    assert judge("models", 404, {}, b"<html>") is None  # an error is classify()'s to read


def test_the_rules_import_nothing_heavy() -> None:
    """The doctor and the client SDK judge answers with them: no aiohttp, no settings."""
    import subprocess
    import sys

    code = ("import sys, gatehouse.upstream.shape; "
            "print([m for m in ('aiohttp', 'pydantic', 'gatehouse.config') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
