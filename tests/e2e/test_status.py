"""The status page tells the truth by itself, against a real ``gatehouse serve`` and the test
upstream: 20 % of the traffic (the official openai SDK as the client) failing upstream makes
the model's component and the API degrade and opens an automatic incident on /status and
/api/v2/summary.json; once the failures stop it is resolved with a drafted postmortem carrying
the measured peak, the duration and real failed request ids; the page read in headless
Chromium at desktop and phone width (screenshots kept in the test's tmp dir).

The detector's tick and windows are shrunk here (1 s ticks, 1-minute windows, short holds):
the numbers, not the logic, are what the defaults change."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser

from gatehouse.doctor.statuspage import read_summary
from tests.e2e.conftest import keep_local, upstream_cfg
from tests.e2e.test_identity import cli, pg_database
from tests.support.procs import ADMIN_TIMEOUT, Gateway, Upstream
from tests.support.services import PG_URL

__all__ = ["pg_database"]

pytestmark = pytest.mark.e2e

FAST_STATUS = {"tick_seconds": 1, "snapshot_seconds": 1, "max_age_seconds": 0,
               "now_minutes": 1, "fast_long_minutes": 2, "fast_short_minutes": 1,
               "slow_long_minutes": 2, "slow_short_minutes": 1, "min_requests": 10,
               "open_after_seconds": 2, "resolve_after_seconds": 12}


class Traffic:
    """Chat completions of model ``m`` from a thread, ~25 a second; one in five carries the
    upstream's poison word while ``failing`` is set."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.failing = threading.Event()
        self.stop = threading.Event()
        self.sent = {"ok": 0, "failed": 0}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with openai.OpenAI(base_url=self.gw.url + "/v1", api_key="none", max_retries=0,
                           timeout=10) as sdk:
            i = 0
            while not self.stop.is_set() and i < 20_000:
                i += 1
                word = "boom" if self.failing.is_set() and i % 5 == 0 else "hello"
                try:
                    sdk.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": word}])
                    self.sent["ok"] += 1
                except openai.APIStatusError:
                    self.sent["failed"] += 1
                time.sleep(0.04)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


def wait_for(gw: Gateway, check: Callable[[dict[str, Any]], bool], timeout: float
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        summary: dict[str, Any] = httpx.get(gw.url + "/api/v2/summary.json").json()
        if check(summary) or time.monotonic() > deadline:
            return summary
        time.sleep(0.5)


def shoot(browser: Browser, gw: Gateway, path: Path, width: int) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    outside = keep_local(page, gw.url)
    page.goto(gw.url + "/status")
    page.screenshot(path=str(path), full_page=True)
    found = {"indicator": page.locator("#indicator").inner_text(),
             "api": page.locator("[data-component=api]").get_attribute("data-state"),
             "web": page.locator("[data-component=web]").get_attribute("data-state"),
             "bars": page.locator("[data-component=api] .bar").count(),
             "overflow": page.evaluate("document.documentElement.scrollWidth") - width,
             "text": page.locator("main").inner_text(), "outside": outside}
    page.close()
    return found


def test_failures_open_and_recovery_resolves_an_automatic_incident(
        start_gateway: Callable[..., Gateway], up_a: Upstream, browser: Browser,
        tmp_path: Path) -> None:
    gw = start_gateway({
        "telemetry": {"access_log": False},
        "status": FAST_STATUS,
        "upstreams": {"a": upstream_cfg(up_a, breaker_failures=100_000,
                                        breaker_failure_ratio=1.0)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]}},
    }, start_timeout=180)
    admin = {"authorization": "Bearer "
             + cli(gw.config_path, "keys", "create", "--admin").strip()}
    calm = httpx.get(gw.url + "/api/v2/summary.json").json()
    assert calm["status"] == {"indicator": "none", "description": "All Systems Operational"}
    up_a.control(poison="boom")
    with Traffic(gw) as traffic:
        time.sleep(3)
        traffic.failing.set()
        began = time.monotonic()
        summary = wait_for(gw, lambda s: bool(s["incidents"]), 60)
        detected = time.monotonic() - began
        assert summary["incidents"], (traffic.sent, summary)
        assert detected < 60
        states = {c["name"]: c["status"] for c in summary["components"]}
        assert states["m"] in ("degraded_performance", "partial_outage")
        assert states["API"] in ("degraded_performance", "partial_outage")
        assert states["Web"] == "operational" and states["Login"] == "operational"
        [incident] = summary["incidents"]
        assert incident["incident_updates"][0]["body"].startswith("Automatic:")
        assert {c["name"] for c in incident["components"]} == {"API", "m"}
        seen = read_summary(gw.url, summary, ("m",))  # the doctor's reader
        assert seen.trouble and seen.ours
        during = shoot(browser, gw, tmp_path / "status-incident.png", 1280)
        assert during["api"] != "operational" and during["web"] == "operational"
        assert "Elevated errors" in during["text"] and during["outside"] == []

        traffic.failing.clear()
        summary = wait_for(gw, lambda s: not s["incidents"], 100)
        assert summary["incidents"] == [], summary
        assert summary["status"]["indicator"] == "none"

    listed = httpx.get(gw.url + "/admin/v1/incidents", headers=admin,
                       timeout=ADMIN_TIMEOUT).json()["data"]
    [done] = listed
    assert done["automatic"] and done["status"] == "resolved"
    peak = done["figures"]["peak_error_rate"]
    assert 0.05 <= peak <= 0.6, done["figures"]
    draft = done["postmortem"]
    assert f"Peak error rate: {peak:.1%}" in draft and "Duration:" in draft
    assert "Not affected: Web, Login" in draft
    assert "req_" in draft.split("Example failed requests:")[1]
    phone = shoot(browser, gw, tmp_path / "status-phone.png", 375)
    assert phone["overflow"] <= 0 and phone["bars"] == 90
    assert "All Systems Operational" in phone["indicator"]
    assert "Elevated errors" in phone["text"]  # among the past incidents
    assert (tmp_path / "status-phone.png").stat().st_size > 0


class StoreLink:
    """A TCP relay to PostgreSQL on 127.0.0.1 in a thread of its own: the gateway's only way
    to its store, so closing it stops the store as far as the gateway can tell."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        async def close() -> None:
            self.server.close()
            for w in self.writers:
                w.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def stop(self) -> None:
        async def shutdown() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in self.writers:
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_the_page_is_served_while_the_store_is_down(start_gateway: Callable[..., Gateway],
                                                   pg_database: str) -> None:
    link = StoreLink(int(PG_URL.rsplit(":", 1)[1].split("/")[0]))
    try:
        url = pg_database.replace("127.0.0.1:5432", f"127.0.0.1:{link.port}")
        gw = start_gateway({"telemetry": {"access_log": False},
                            "storage": {"database_url": url},
                            "status": {"snapshot_seconds": 1, "tick_seconds": 1}},
                           start_timeout=180)
        before = {p: httpx.get(gw.url + p) for p in ("/api/v2/summary.json", "/status")}
        assert all(r.status_code == 200 for r in before.values())
        link.cut()
        deadline = time.monotonic() + 30
        while "the last snapshot is served" not in gw.log.read_text():  # refreshes fail
            assert time.monotonic() < deadline, gw.log.read_text()[-2000:]
            time.sleep(0.5)
        # (a snapshot may have been made between `before` and the cut: compare within it)
        during = {p: httpx.get(gw.url + p) for p in before}
        time.sleep(2.5)  # two snapshot periods: the last snapshot stays, it is not rebuilt
        for path, first in during.items():
            again = httpx.get(gw.url + path)
            assert first.status_code == again.status_code == 200
            assert again.content == first.content
            assert again.headers["etag"] == first.headers["etag"]
            head = httpx.head(gw.url + path)  # what uptime monitors send, through uvicorn
            assert head.status_code == 200 and head.content == b""
            assert head.headers["etag"] == first.headers["etag"]
            assert head.headers["content-length"] == str(len(first.content))
    finally:
        link.cut()
        link.stop()


def test_web_failures_mark_web_not_api(start_gateway: Callable[..., Gateway],
                                       proc_dir: Path) -> None:
    """Web pages failing (rows as another replica would write them to the shared store —
    503s of the web path) while the API answers: Web degrades, API stays operational."""
    gw = start_gateway({"telemetry": {"access_log": False}, "status": FAST_STATUS},
                       start_timeout=180)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0) as sdk:
        for _ in range(20):
            sdk.chat.completions.create(model="demo", messages=[
                {"role": "user", "content": "hello"}])
    hist = '{"20": 1}'
    minute = int(time.time() // 60)
    db = sqlite3.connect(gw.db_path)
    with db:
        db.executemany(
            "INSERT INTO rollup_minute (minute, component, model, tier, org, project, "
            "error_class, requests, prompt_tokens, completion_tokens, admission_wait_ms, "
            "latency, ttfb) VALUES (?, 'web', '', 'free', '', '', ?, ?, 0, 0, 0, ?, '{}')",
            [(m, cls, n, hist) for m in (minute, minute + 1)
             for cls, n in (("ok", 40), ("unavailable", 60))])
    db.close()
    summary = wait_for(gw, lambda s: bool(s["incidents"]), 60)
    states = {c["name"]: c["status"] for c in summary["components"]}
    assert states["Web"] == "major_outage", summary
    assert states["API"] == "operational" and states["demo"] == "operational"
    assert [c["name"] for c in summary["incidents"][0]["components"]] == ["Web"]
