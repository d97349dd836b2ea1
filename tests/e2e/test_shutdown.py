"""Graceful shutdown (docs/deployment.md): on SIGTERM a gateway stops taking connections, lets
the answers in flight — streams included — finish for up to ``[server]
shutdown_grace_seconds``, and exits; past the grace it cuts what is left and exits anyway.
What Kubernetes' ``terminationGracePeriodSeconds`` and systemd's ``TimeoutStopSec`` in
deploy/ are sized for."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import Gateway

pytestmark = pytest.mark.e2e

BODY = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def slow_gateway(proc_dir: Path, grace: float, tokens: int) -> Gateway:
    return Gateway(proc_dir, {"server": {"shutdown_grace_seconds": grace},
                              "demo": {"ms_per_token": 100, "reply_tokens": tokens}})


@contextlib.contextmanager
def stream_then_sigterm(gw: Gateway) -> Iterator[tuple[Iterator[str], float]]:
    """A stream's first event read, then SIGTERM sent: its remaining lines and when."""
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=BODY, timeout=30) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        gw.proc.send_signal(signal.SIGTERM)
        yield lines, time.monotonic()


def test_sigterm_lets_a_stream_in_flight_finish_then_exits(proc_dir: Path) -> None:
    gw = slow_gateway(proc_dir, grace=20, tokens=60)  # a 6-s answer
    try:
        with stream_then_sigterm(gw) as (lines, signalled):
            # no new connections while it drains: refused once the signal is handled (at
            # once on a quiet machine; a starved one may take a moment to get there)
            while True:
                try:
                    httpx.get(gw.url + "/healthz", timeout=5)
                except (httpx.ConnectError, httpx.RemoteProtocolError):
                    # refused; or, on a starved machine, accepted just before the listener
                    # closed and then closed unanswered — not taken either way
                    break
                assert time.monotonic() - signalled < 4, "still taking connections"
                time.sleep(0.1)
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]", rest[-3:]  # the whole answer, not cut
        assert len(rest) >= 55
        # then it exits: uvicorn re-raises the SIGTERM it caught once it is done, so the
        # process ends by that signal (what systemd and Kubernetes expect of a stop they sent)
        assert gw.proc.wait(timeout=15) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < 15
    finally:
        gw.stop()


def test_past_the_grace_a_stream_is_cut_and_the_gateway_exits(proc_dir: Path) -> None:
    gw = slow_gateway(proc_dir, grace=1, tokens=300)  # a 30-s answer, 1 s of grace
    try:
        with stream_then_sigterm(gw) as (lines, signalled):
            got = []
            with pytest.raises(httpx.HTTPError):  # the connection is closed mid-answer
                got.extend(line for line in lines if line.startswith("data:"))
        assert "data: [DONE]" not in got and len(got) < 250
        gw.proc.wait(timeout=15)
        # the grace, and the time the server takes to close (bounded; not the 30-s answer)
        assert time.monotonic() - signalled < 10
    finally:
        gw.stop()
