"""The backend's API key never reaches a log line or a client, whatever the backend does."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.conftest import upstream_cfg
from tests.support.procs import Gateway, Upstream

SECRET = "sk-SECRET-key-0123456789abcdef"


class Malformed(socketserver.BaseRequestHandler):
    """Answers every request with a broken HTTP header."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n{}")


@pytest.fixture
def malformed_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Malformed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_api_key_stays_out_of_logs_and_answers(start_gateway: Callable[..., Gateway],
                                               up_a: Upstream, malformed_port: int) -> None:
    gw = start_gateway({
        "upstreams": {
            "bad": {"base_url": f"http://127.0.0.1:{malformed_port}/v1", "api_key_env": "BK"},
            "dead": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "BK"},
            "a": upstream_cfg(up_a, api_key_env="BK")},
        "models": {"bad": {"backends": ["bad"]}, "dead": {"backends": ["dead"]},
                   "m": {"backends": ["a"]}}}, env={"BK": SECRET})
    answers = []
    for model in ("bad", "dead", "m"):
        for stream in (False, True):
            answers.append(httpx.post(gw.url + "/v1/chat/completions", json={
                "model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
    assert [a.status_code for a in answers][:4] == [503, 503, 503, 503]
    httpx.get(gw.url + "/readyz")
    log = gw.log.read_text()
    assert "Broken" in log and "ConnectFailed" in log  # the failures were logged...
    assert SECRET not in log  # ...without the key
    assert all(SECRET not in a.text for a in answers)
