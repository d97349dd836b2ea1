"""curl-level checks of raw headers and bodies (what a shell user or a load balancer sees)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.support.procs import Gateway

BODY = '{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", *args], capture_output=True,
                         check=True).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def test_json_answer_headers(shared_gateway: Gateway) -> None:
    # curl's default form content type is accepted as long as the body is JSON
    status, headers, body = curl("-d", BODY, shared_gateway.url + "/v1/chat/completions")
    assert status == 200
    assert re.match(r"^req_[0-9a-z]{26}$", headers["x-request-id"])
    assert headers["content-type"] == "application/json"
    assert headers["openai-processing-ms"].isdigit()
    assert int(headers["content-length"]) == len(body.encode())
    assert json.loads(body)["object"] == "chat.completion"


def test_sse_answer_headers_and_framing(shared_gateway: Gateway) -> None:
    stream_body = BODY[:-1] + ',"stream":true}'
    status, headers, body = curl("-N", "-H", "content-type: application/json",
                                 "-H", "x-client-request-id: curl-1", "-d", stream_body,
                                 shared_gateway.url + "/v1/chat/completions")
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert headers["x-client-request-id"] == "curl-1" and "x-request-id" in headers
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert all(json.loads(e[6:])["choices"] for e in events[:-1])


def test_error_bodies_json_and_html(shared_gateway: Gateway, tmp_path: Path) -> None:
    status, headers, body = curl(shared_gateway.url + "/v1/chat/completions")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"
    status, headers, body = curl("-H", "accept: text/html", shared_gateway.url + "/nowhere")
    assert status == 404 and headers["content-type"].startswith("text/html")
    assert headers["x-request-id"] in body
    big = tmp_path / "big.json"
    big.write_text('{"model":"m","messages":[{"role":"user","content":"' + "x" * 11_000_000
                   + '"}]}')
    status, headers, body = curl("-H", "content-type: application/json",
                                 "--data-binary", f"@{big}",
                                 shared_gateway.url + "/v1/chat/completions")
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    status, _, body = curl("-d", "{oops", shared_gateway.url + "/v1/chat/completions")
    error = json.loads(body)["error"]
    assert status == 400 and error["code"] == "invalid_json"
    assert "Content-Type: application/json" in error["message"]
