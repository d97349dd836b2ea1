"""Webhooks on incident changes: a generic JSON body in Statuspage's webhook shape (``meta``,
``page``, ``incident``) signed with HMAC-SHA256, and a Slack-compatible ``{"text": …}`` body.

Changes are handed over with :meth:`Webhooks.notify`, which never waits: a bounded queue
(``size``), and when it is full the change is dropped and counted (``dropped``) rather than
holding up the detector or the snapshot. One task delivers, each target with ``attempts``
tries and exponential backoff (1 s, 2 s, 4 s, …), each try bounded by ``timeout``.

The signature, ``X-Gatehouse-Signature: t=UNIX,v1=HEX``: HMAC-SHA256 with the secret of
``"{t}.{body}"`` — the receiver recomputes it over the raw body, compares in constant time,
and refuses old ``t`` (replays)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gatehouse.store.flusher import stop_task

if TYPE_CHECKING:  # imported when a webhook is configured: httpx brings Rich and Pygments
    import httpx

log = logging.getLogger("gatehouse.status")
SIGNATURE = "x-gatehouse-signature"
EVENT = "x-gatehouse-event"


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    slack: bool = False


def sign(secret: bytes, body: bytes, at: int) -> str:
    mac = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, now: float, tolerance: float = 300) -> bool:
    """What a receiver does (and the tests): the signature matches and is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, at).split("v1=", 1)[1]
    return abs(now - at) <= tolerance and hmac.compare_digest(expected, parts.get("v1", ""))


def slack_text(event: str, incident: dict[str, Any]) -> dict[str, Any]:
    latest = incident["incident_updates"][0] if incident["incident_updates"] else {}
    status = incident["status"].replace("_", " ")
    text = (f"[{incident['impact']}] {incident['name']} — {status}: "
            f"{latest.get('body', '')} <{incident['shortlink']}|details>")
    return {"text": text}


class Webhooks:
    def __init__(self, targets: Iterable[Target], secret: bytes | None, *, size: int = 256,
                 attempts: int = 5, first_backoff: float = 1.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.targets = list(targets)
        self.secret = secret
        self.attempts = attempts
        self.first_backoff = first_backoff
        self.timeout = timeout
        self.clock = clock
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], dict[str, Any]]] = \
            asyncio.Queue(size)
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    def notify(self, event: str, page: dict[str, Any], incident: dict[str, Any]) -> bool:
        """Queue a change (``incident.created``, ``incident.updated``, ``incident.resolved``);
        False when the queue is full and it was dropped."""
        if not self.targets:
            return True
        try:
            self.queue.put_nowait((event, page, incident))
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("status webhooks: queue full, %s of %s dropped", event,
                        incident.get("id"))
            return False

    def body(self, target: Target, event: str, page: dict[str, Any],
             incident: dict[str, Any]) -> bytes:
        if target.slack:
            return orjson.dumps(slack_text(event, incident))
        return orjson.dumps({"meta": {"event": event, "generated_at": int(self.clock())},
                             "page": page, "incident": incident})

    async def _deliver(self, client: httpx.AsyncClient, target: Target, event: str,
                       body: bytes) -> bool:
        for attempt in range(self.attempts):
            headers = {"content-type": "application/json", EVENT: event}
            if self.secret is not None and not target.slack:
                headers[SIGNATURE] = sign(self.secret, body, int(self.clock()))
            import httpx

            try:
                response = await client.post(target.url, content=body, headers=headers)
                if response.status_code < 300:
                    return True
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.first_backoff * 2 ** attempt)
        log.warning("status webhooks: %s to %s failed after %d tries (%s)", event,
                    target.url.split("?")[0], self.attempts, why)
        return False

    async def _run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                event, page, incident = await self.queue.get()
                for target in self.targets:
                    if await self._deliver(client, target, event,
                                           self.body(target, event, page, incident)):
                        self.delivered += 1
                    else:
                        self.failed += 1

    def start(self) -> None:
        if self.targets and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None


def changes(before: dict[str, tuple[str, str]] | None,
            incidents: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The events between two snapshots' incidents (``before``: id → (updated_at, status);
    None: the first snapshot, which announces nothing)."""
    if before is None:
        return []
    out = []
    for i in incidents:
        seen = before.get(i["id"])
        if seen is None:
            out.append(("incident.created", i))
        elif seen != (i["updated_at"], i["status"]):
            done = i["status"] in ("resolved", "completed", "postmortem")
            out.append(("incident.resolved" if done and seen[1] != i["status"]
                        else "incident.updated", i))
    return out
