"""Webhooks on incident changes, received by a real HTTP receiver on 127.0.0.1 that checks the
HMAC signature: the generic body (Statuspage's webhook shape) and the Slack body, retries with
backoff past a failing receiver, a bounded queue that drops rather than waits, and the status
service announcing created / updated / resolved once, from the lease holder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gatehouse.config import ConfigError, Settings
from gatehouse.status.service import StatusService
from gatehouse.status.webhooks import SIGNATURE, Target, Webhooks, sign, verify
from gatehouse.store.db import Store
from tests.unit.conftest import make_settings

SECRET = b"webhook-secret-0123456789abcdef"
INCIDENT = {"id": "abcdefghijkl", "name": "Elevated errors on API", "status": "investigating",
            "impact": "major", "shortlink": "http://gw/status#abcdefghijkl",
            "incident_updates": [{"body": "Automatic: 20% failing."}]}


@dataclass
class Receiver:
    url: str
    seen: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    fail_first: int = 0

    async def wait(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len([s for s in self.seen if s[0] == "ok"]) < count:
            assert time.monotonic() < deadline, self.seen
            await asyncio.sleep(0.02)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        me = box[0]
        body = await request.read()
        if me.fail_first > 0:
            me.fail_first -= 1
            me.seen.append(("failed", body, {k.lower(): v for k, v in request.headers.items()}))
            return web.Response(status=500)
        me.seen.append(("ok", body, {k.lower(): v for k, v in request.headers.items()}))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{name}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    box.append(Receiver(f"http://127.0.0.1:{port}"))
    yield box[0]
    await runner.cleanup()


async def test_signed_generic_and_slack_bodies_with_retries(receiver: Receiver) -> None:
    receiver.fail_first = 2
    hooks = Webhooks([Target(receiver.url + "/generic"), Target(receiver.url + "/slack", True)],
                     SECRET, first_backoff=0.01)
    hooks.start()
    try:
        page = {"id": "p", "status_indicator": "major"}
        assert hooks.notify("incident.created", page, INCIDENT)
        await receiver.wait(2)
        deadline = time.monotonic() + 10  # (the sender counts after the answer arrives)
        while hooks.delivered < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await hooks.aclose()
    assert [s[0] for s in receiver.seen] == ["failed", "failed", "ok", "ok"]
    _, body, headers = receiver.seen[2]
    assert verify(SECRET, body, headers[SIGNATURE], time.time())
    assert not verify(b"another secret", body, headers[SIGNATURE], time.time())
    assert not verify(SECRET, body + b" ", headers[SIGNATURE], time.time())
    assert not verify(SECRET, body, sign(SECRET, body, int(time.time()) - 3600), time.time())
    assert not verify(SECRET, body, "garbage", time.time())
    sent = orjson.loads(body)
    assert sent["meta"]["event"] == "incident.created"
    assert sent["incident"]["id"] == INCIDENT["id"] and sent["page"]["status_indicator"]
    assert headers["x-gatehouse-event"] == "incident.created"
    _, slack, slack_headers = receiver.seen[3]
    text = orjson.loads(slack)["text"]
    assert "Elevated errors on API" in text and "|details>" in text and "[major]" in text
    assert SIGNATURE not in slack_headers
    assert hooks.delivered == 2 and hooks.failed == 0


async def test_a_full_queue_drops_and_never_waits() -> None:
    hooks = Webhooks([Target("http://127.0.0.1:9/x")], SECRET, size=2)
    assert hooks.notify("incident.updated", {}, INCIDENT)
    assert hooks.notify("incident.updated", {}, INCIDENT)
    assert not hooks.notify("incident.updated", {}, INCIDENT)
    assert hooks.dropped == 1


async def test_a_receiver_that_never_answers_well_is_given_up(receiver: Receiver) -> None:
    receiver.fail_first = 100
    hooks = Webhooks([Target(receiver.url + "/generic")], SECRET, attempts=3,
                     first_backoff=0.01)
    hooks.start()
    try:
        hooks.notify("incident.created", {}, INCIDENT)
        deadline = time.monotonic() + 10
        while hooks.failed < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await hooks.aclose()
    assert len(receiver.seen) == 3


async def test_the_service_announces_each_change_once(receiver: Receiver, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TEST_WEBHOOK_SECRET", SECRET.decode())
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    await store.migrate()
    settings = make_settings(tmp_path, status={
        "webhook_urls": [receiver.url + "/generic"], "webhook_secret_env":
        "GH_TEST_WEBHOOK_SECRET", "tick_seconds": 600, "snapshot_seconds": 300})
    leader = StatusService(settings, store)
    follower = StatusService(settings, store)
    await leader.start()
    await follower.start()
    try:
        await leader.tick()
        await follower.tick()
        assert leader.leader and not follower.leader
        made = await leader.incidents.open("Slow sign-in", "Looking.",
                                           components={"login": "degraded_performance"})
        for svc in (leader, follower):
            await svc.refresh()
        await leader.incidents.resolve(made.row.id, "Fixed.")
        for svc in (leader, follower):
            await svc.refresh()
        await receiver.wait(2)
    finally:
        await follower.aclose()
        await leader.aclose()
        await store.aclose()
    events: list[Any] = [orjson.loads(b)["meta"]["event"] for _, b, _ in receiver.seen]
    assert events == ["incident.created", "incident.resolved"]
    for _, body, headers in receiver.seen:
        assert verify(SECRET, body, headers[SIGNATURE], time.time())


def test_webhooks_need_their_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="webhook_secret_env"):
        Settings.model_validate({"status": {"webhook_urls": ["http://127.0.0.1:1/x"]}})
    with pytest.raises(ValueError, match="http"):
        Settings.model_validate({"status": {"slack_webhook_urls": ["ftp://x"]}})
    monkeypatch.delenv("GH_NOT_SET", raising=False)
    settings = make_settings(tmp_path, status={"webhook_urls": ["http://127.0.0.1:1/x"],
                                               "webhook_secret_env": "GH_NOT_SET"})
    with pytest.raises(ConfigError, match="GH_NOT_SET is not set"):
        StatusService(settings, Store("sqlite+aiosqlite:///:memory:"))
