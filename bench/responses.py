#!/usr/bin/env python
"""What the Responses API costs: POST /v1/responses vs POST /v1/chat/completions through
the same gateway to the same chat-only upstream (so every Responses call is translated to a
chat completion and back), and the bridge's cost per streamed event.

Starts the test upstream and one gatehouse (open mode, one worker). For plain and streamed
requests, measures p50 latency of both endpoints at a fixed open-loop rate, interleaved and
repeated, and prints the medians and the responses/chat ratio (goal: within +10 %). Then
times the stream translation alone, in-process: a 200-chunk chat stream through the tap and
the bridge (ChatToResponses) vs through the tap alone, in µs per chat event.

    .venv/bin/python bench/responses.py            # ~2 minutes
    .venv/bin/python bench/responses.py --quick    # ~40 s

All traffic goes to 127.0.0.1; bounded in count and time; children are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import loadgen
import overhead
from rich.console import Console
from rich.table import Table

from gatehouse.upstream.responses_events import ChatToResponses
from gatehouse.upstream.sse import StreamTap

HOST = overhead.HOST
GOAL = 1.10


def chat_stream(chunks: int) -> list[bytes]:
    """A chat completion stream of ``chunks`` one-word deltas, a finish, usage and [DONE]."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {
        "content": f" word{i}"}, "finish_reason": None}]}) + b"\n\n" for i in range(chunks)]
    out.append(b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {},
                                                              "finish_reason": "stop"}]})
               + b"\n\n")
    out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": {
        "prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}})
        + b"\n\ndata: [DONE]\n\n")
    return out


def per_event_us(chunks: int = 200, rounds: int = 200) -> tuple[float, float]:
    """µs per chat event: through the tap alone (as a chat stream is relayed), and through
    the tap and the bridge (as a translated Responses stream is); best of 5."""
    stream = chat_stream(chunks)
    body = {"model": "m", "input": "hi", "stream": True}

    def run(bridged: bool) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            tap = StreamTap(not bridged)
            bridge = ChatToResponses(body, "resp_x") if bridged else None
            for chunk in stream:
                out = tap.feed(chunk)
                if bridge is not None and out:
                    bridge.feed(out)
            if bridge is not None:
                bridge.finish(tap.usage)
        return (time.perf_counter() - started) / (rounds * len(stream)) * 1e6

    tap_only = min(run(False) for _ in range(5))
    bridged = min(run(True) for _ in range(5))
    return tap_only, bridged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    repeats, duration = (2, 3.0) if args.quick else (5, 5.0)
    py = overhead.repo_python()
    kids = overhead.Children()
    try:
        upstream = overhead.start_upstream(kids, py)
        gw = overhead.start_gatehouse(kids, py, upstream, name="responses")
        overhead.smoke(gw)
        pids = [upstream.pid, gw.pid]
        import uvloop

        kinds = {(api, stream): (loadgen.responses_request if api == "responses" else
                                 loadgen.chat_request)(HOST, gw.port, api_key=gw.api_key,
                                                       stream=stream)
                 for api in ("chat", "responses") for stream in (False, True)}
        p50: dict[tuple[str, bool], list[float]] = {k: [] for k in kinds}
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for req in kinds.values():  # warm up both paths
                runner.run(loadgen.closed_loop(HOST, gw.port, req, conns=4, duration=1.0,
                                               warmup=0.0))
            for rep in range(repeats):
                order = list(kinds) if rep % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    overhead.quiesce(pids)
                    res = runner.run(loadgen.open_loop(
                        HOST, gw.port, kinds[kind], rate=args.rate, duration=duration,
                        warmup=0.5, max_conns=64))
                    assert res.errors == 0, res.first_error
                    p50[kind].append(res.percentile(50) * 1e3)
                overhead.log(f"repeat {rep + 1}/{repeats} done")
        table = Table(title=f"p50 latency through the gateway, ms (median of {repeats} repeats "
                            f"at {args.rate:,.0f} req/s, chat-only upstream, one worker)")
        for col in ("", "chat/completions", "responses", "responses/chat"):
            table.add_column(col, justify="right")
        console = Console(width=110)
        verdicts = []
        for stream in (False, True):
            chat = statistics.median(p50["chat", stream])
            resp = statistics.median(p50["responses", stream])
            verdicts.append(resp / chat)
            table.add_row("streamed (last byte)" if stream else "plain", f"{chat:.2f}",
                          f"{resp:.2f}", f"{resp / chat:.2f}×")
        console.print(table)
        tap_only, bridged = per_event_us()
        console.print(f"stream translation, in-process: {tap_only:.2f} µs per chat event "
                      f"relayed as chat, {bridged:.2f} µs translated to Responses events: "
                      f"the bridge adds {bridged - tap_only:.2f} µs per event")
        console.print("\n".join(
            [f"goal: responses within {GOAL:.2f}× chat p50 ({kind}): {ratio:.2f}× "
             f"{'PASS' if ratio <= GOAL else 'MISS'}"
             for kind, ratio in zip(("plain", "streamed"), verdicts, strict=True)]
            + [f"{time.strftime('%Y-%m-%d %H:%M')}; {overhead.machine()}"]))
    finally:
        kids.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
