#!/usr/bin/env python
"""The web chat's figures (issue 15), in one run against real processes on 127.0.0.1:

* time from send to the first token: ``POST /chat/send`` (first ``delta`` event) vs the
  API's ``POST /v1/chat/completions`` (first content chunk) for the same request to the same
  test upstream, interleaved; medians and the ratio;
* a 1,000-message conversation in headless Chromium (/usr/bin/chromium): page load until every
  message is shown, then scrolling from the bottom to the top and back (time per step);
* the JavaScript the chat page ships (bytes, raw and gzip; target <= 100 KB);
* 200 concurrent chat streams on one worker (the demo model, bounded): errors counted.

    PYTHONPATH=. .venv/bin/python bench/chat.py            # ~2 minutes
    PYTHONPATH=. .venv/bin/python bench/chat.py --quick    # fewer repeats

Uses the test suite's process helpers (tests/support). Every loop is bounded; every child
process is stopped at the end. The machine is shared: the load average is printed with the
figures, which are medians and ratios, not absolute promises.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.chat import PASSWORD, ChatClient, chat_config, create_users
from tests.support.procs import Gateway, Upstream

MESSAGES = 1000
STREAMS = 200


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def processes(tmp: Path) -> Iterator[tuple[Gateway, Upstream]]:
    up = Upstream("bench", tmp)
    config = chat_config(up)
    config["web"] = {**config["web"], "max_conversation_chars": 10_000_000}
    config["demo"] = {"ms_per_token": 20, "reply_tokens": 30}
    config["telemetry"] = {"access_log": False}
    config["server"] = {"max_connections_per_address": 1024}
    gw = Gateway(tmp, config, start_timeout=120)
    try:
        create_users(gw)
        yield gw, up
    finally:
        gw.stop()
        up.stop()


# -- 1. time to first token --------------------------------------------------------------
def first_token(http: httpx.Client, path: str, body: dict[str, Any], marker: bytes,
                **headers: str) -> float:
    """Seconds from sending to the first piece of the answer (``marker`` in the stream);
    the rest is read to its end, as the page does."""
    began = time.perf_counter()
    with http.stream("POST", path, json=body, headers=headers) as s:
        got = b""
        chunks = s.iter_raw()
        for chunk in chunks:
            got += chunk
            if marker in got:
                took = time.perf_counter() - began
                break
        else:
            raise RuntimeError(got[-300:].decode())
        for _ in chunks:
            pass
    return took


def first_token_chat(c: ChatClient) -> float:
    return first_token(c.http, "/chat/send", {"model": "m", "content": "hello"},
                       b"event: delta", **{"x-csrf-token": c.csrf})


def first_token_api(http: httpx.Client) -> float:
    return first_token(http, "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True,
        "stream_options": {"include_usage": True}, "max_tokens": 60}, b'"content"')


def ttft(gw: Gateway, repeats: int) -> dict[str, Any]:
    c = ChatClient(gw, "main@example.com")
    api = httpx.Client(base_url=gw.url, timeout=30)
    chat_t: list[float] = []
    api_t: list[float] = []
    try:
        for _ in range(3):  # warm both paths
            first_token_chat(c)
            first_token_api(api)
        for i in range(repeats):  # interleaved, alternating which goes first
            if i % 2:
                chat_t.append(first_token_chat(c))
                api_t.append(first_token_api(api))
            else:
                api_t.append(first_token_api(api))
                chat_t.append(first_token_chat(c))
    finally:
        c.close()
        api.close()
    return {"chat": chat_t, "api": api_t}


# -- 2. a 1,000-message conversation in Chromium -----------------------------------------
def seed(gw: Gateway) -> str:
    from gatehouse.store.conversations import Conversations
    from gatehouse.store.db import Store

    async def make() -> str:
        store = Store(f"sqlite+aiosqlite:///{gw.config_path.parent}/gh-{gw.port}.db")
        try:
            async with store.session() as s:
                from sqlalchemy import select

                from gatehouse.store.tables import User
                user = await s.scalar(select(User).where(User.email == "main@example.com"))
            assert user is not None
            text = ("Here is a paragraph of an answer with **bold**, `code` and a list:\n"
                    "- one\n- two\n\n```python\nprint('hello')\n```\n")
            rows = [("user" if i % 2 == 0 else "assistant",
                     f"message {i}: " + (text if i % 2 else "a question, short"), "done")
                    for i in range(MESSAGES)]
            conv, _ = await Conversations(store).create(user.id, "A long one", "demo", rows)
            return conv.id
        finally:
            await store.aclose()

    return asyncio.run(make())


def browser_figures(gw: Gateway, cid: str, repeats: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    loads: list[float] = []
    steps: list[float] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-background-networking"])
        try:
            context = b.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(gw.url + "/login?next=/")
            page.fill("#email", "main@example.com")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_url(gw.url + "/")
            for _ in range(repeats):
                began = time.perf_counter()
                page.goto(f"{gw.url}/c/{cid}")
                page.wait_for_function(  # a function, not a string: the CSP has no eval
                    "n => document.querySelectorAll('#messages .msg').length >= n",
                    arg=MESSAGES, timeout=120_000, polling=50)
                loads.append(time.perf_counter() - began)
                # scroll bottom → top → bottom in 20 steps of a screen each way, one frame
                # each: the time each step takes to lay out and paint
                took = page.evaluate("""async () => {
                    const el = document.getElementById('messages');
                    const frame = () => new Promise(r => requestAnimationFrame(() => r()));
                    const out = [];
                    const span = el.scrollHeight - el.clientHeight;
                    for (const dir of [-1, 1]) {
                      for (let i = 1; i <= 20; i++) {
                        const t = performance.now();
                        el.scrollTop = dir < 0 ? span - span * i / 20 : span * i / 20;
                        await frame(); await frame();
                        out.push(performance.now() - t);
                      }
                    }
                    return out;
                }""")
                steps.extend(took)
            context.close()
        finally:
            b.close()
    return {"load": loads, "scroll_ms": steps}


# -- 3. the JavaScript shipped -------------------------------------------------------------
def javascript(gw: Gateway) -> dict[str, int]:
    c = ChatClient(gw, "main@example.com")
    try:
        html = c.http.get("/").text
        sources = re.findall(r'<script[^>]*src="([^"]+)"', html)
        inline = re.findall(r"<script(?![^>]*src=)[^>]*>(.*?)</script>", html, re.DOTALL)
        body = b"".join(c.http.get(src).content for src in sources)
        return {"files": len(sources), "raw": len(body), "gzip": len(gzip.compress(body, 9)),
                "inline_data": sum(len(s) for s in inline)}
    finally:
        c.close()


# -- 4. 200 concurrent streams on one worker -----------------------------------------------
async def concurrent(gw: Gateway, n: int) -> dict[str, Any]:
    people = [ChatClient(gw, email) for email in ("main@example.com", "other@example.com")]
    errors: dict[str, int] = {}
    firsts: list[float] = []
    totals: list[float] = []

    async def one(i: int, http: httpx.AsyncClient, csrf: str) -> None:
        began = time.perf_counter()
        try:
            async with http.stream("POST", "/chat/send", json={
                    "model": "demo", "content": f"stream {i}"},
                    headers={"x-csrf-token": csrf}) as s:
                if s.status_code != 200:
                    errors[f"http {s.status_code}"] = errors.get(f"http {s.status_code}", 0) + 1
                    return
                got = b""
                first = None
                async for chunk in s.aiter_raw():
                    got += chunk
                    if first is None and b"event: delta" in got:
                        first = time.perf_counter() - began
                if b'"status":"done"' not in got:
                    errors["not done"] = errors.get("not done", 0) + 1
                    return
                firsts.append(first or 0.0)
                totals.append(time.perf_counter() - began)
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    clients = []
    try:
        for p in people:
            clients.append((httpx.AsyncClient(
                base_url=gw.url, cookies=p.http.cookies, timeout=120,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)), p.csrf))
        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(
            one(i, *clients[i % len(clients)]) for i in range(n))), 300)
        wall = time.perf_counter() - began
    finally:
        for http, _ in clients:
            await http.aclose()
        for p in people:
            p.close()
    return {"errors": errors, "ok": len(totals), "first": firsts, "total": totals, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 20 if args.quick else 60
    load_start = load()
    print(f"load average at start: {load_start}")
    with tempfile.TemporaryDirectory() as tmp, processes(Path(tmp)) as (gw, _up):
        t = ttft(gw, repeats)
        chat_m, api_m = statistics.median(t["chat"]), statistics.median(t["api"])
        js = javascript(gw)
        cid = seed(gw)
        br = browser_figures(gw, cid, 3 if args.quick else 5)
        load_mid = load()
        con = asyncio.run(concurrent(gw, STREAMS))
        load_end = load()
    print()
    print("| figure | median | p90 | n | note |")
    print("|---|---|---|---|---|")
    print(f"| send → first token, chat (`POST /chat/send`) | {chat_m * 1000:.1f} ms | "
          f"{pct(t['chat'], 0.9) * 1000:.1f} ms | {len(t['chat'])} | interleaved with the API |")
    print(f"| send → first token, API (`/v1/chat/completions`) | {api_m * 1000:.1f} ms | "
          f"{pct(t['api'], 0.9) * 1000:.1f} ms | {len(t['api'])} | same request, same upstream |")
    print(f"| ratio chat / API (medians) | {chat_m / api_m:.2f}× | | | "
          f"+{(chat_m - api_m) * 1000:.1f} ms |")
    print(f"| {MESSAGES:,}-message conversation: page load until all are shown | "
          f"{statistics.median(br['load']) * 1000:.0f} ms | {max(br['load']) * 1000:.0f} ms "
          f"(max) | {len(br['load'])} | headless Chromium, 1280×800 |")
    print(f"| … scroll one screen (2 frames) | {statistics.median(br['scroll_ms']):.1f} ms | "
          f"{pct(br['scroll_ms'], 0.9):.1f} ms | {len(br['scroll_ms'])} | 60 Hz frames ≈ "
          "16.7 ms each |")
    print(f"| JavaScript shipped | {js['raw']:,} B raw, {js['gzip']:,} B gzip | | "
          f"{js['files']} file(s) | + {js['inline_data']:,} B of page data (JSON, not code); "
          "target ≤ 100 KB |")
    print(f"| {STREAMS} concurrent chat streams, one worker | "
          f"first token {statistics.median(con['first']) * 1000:.0f} ms | "
          f"{pct(con['first'], 0.9) * 1000:.0f} ms | {con['ok']} done | errors: "
          f"{sum(con['errors'].values())} {con['errors'] or ''}; all done in "
          f"{con['wall']:.1f} s (an answer alone ≈ 0.6 s) |")
    print()
    print(f"load average (1/5/15 min): at the start {load_start}, after the browser part "
          f"{load_mid}, after the streams {load_end}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
