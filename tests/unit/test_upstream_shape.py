"""What counts as an answer of each endpoint (gatehouse/upstream/shape.py); the gateway's
behaviour with such backends is tests/e2e/test_upstream_shape.py."""

from __future__ import annotations

import pytest

from gatehouse.upstream.shape import (
    Malformed,
    check_status,
    check_stream_start,
    check_whole,
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
