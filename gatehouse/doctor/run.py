"""One run of the doctor: the probes, concurrently where they are independent, each reporting
its start and end to a :class:`Progress` (the CLI draws Rich progress from it)."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from gatehouse import __version__
from gatehouse.doctor.api import (
    MALFORMED_KEY,
    NOT_API,
    TLS_ERROR,
    UNREACHABLE,
    ApiResult,
    check_api,
)
from gatehouse.doctor.certs import TrustStore
from gatehouse.doctor.findings import Answers, Findings
from gatehouse.doctor.har import HarSummary, read_har
from gatehouse.doctor.health import HealthResult, read_health
from gatehouse.doctor.lookup import look_up
from gatehouse.doctor.network import HostResult, probe_network, read_environment
from gatehouse.doctor.profiles import Endpoint, Profile
from gatehouse.doctor.statuspage import fetch_summary, status_result
from gatehouse.doctor.web import WebResult, check_web

T = TypeVar("T")
STEPS = {"status": "Status page", "network": "Network: DNS, TCP, TLS",
         "api": "API path", "web": "Web path", "har": "HAR file",
         "health": "Your traffic: health and request lookups"}


class Progress(Protocol):
    def started(self, step: str) -> None: ...
    def finished(self, step: str, summary: str, ok: bool = True) -> None:
        """``ok``: the probe found nothing wrong (not merely that it finished)."""


class Quiet:
    def started(self, step: str) -> None:
        return None

    def finished(self, step: str, summary: str, ok: bool = True) -> None:
        return None


@dataclass(slots=True)
class Checkup:
    """What to examine and how; every outside dependency is injectable for tests."""

    profile: Profile
    url: str
    status_url: str | None            # None: skip the status page
    components: tuple[str, ...] = ()
    api_key: str | None = None
    model: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    har: Path | None = None
    answers: Answers = field(default_factory=Answers)
    trust_file: Path | None = None    # PEM roots to judge chains and verify HTTPS by
    system_store: TrustStore | None = None
    timeout: float = 20.0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    interfaces: list[str] | None = None
    skip: frozenset[str] = frozenset()
    request_ids: tuple[str, ...] = ()  # the user's failed requests, to look up (--request-id)

    def trust(self) -> TrustStore:
        if self.trust_file is not None:
            return TrustStore.from_pem_file(self.trust_file)
        return TrustStore.public()

    @property
    def deadline(self) -> float:
        """For each read of a status, health or lookup answer, whole."""
        return min(self.timeout, 10.0)

    def verify(self) -> ssl.SSLContext | bool:
        if self.trust_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.trust_file))


async def step(progress: Progress, name: str, work: Awaitable[T]) -> T:
    progress.started(name)
    result = await work
    progress.finished(name, *describe(result))
    return result


def describe(result: object) -> tuple[str, bool]:
    """A one-line summary of a probe's result for the progress display, and whether it
    found nothing wrong."""
    if isinstance(result, list) and all(isinstance(h, HostResult) for h in result):
        bad = [h for h in result if not h.reachable or h.intercepted]
        return f"{len(result) - len(bad)}/{len(result)} hosts clean", not bad
    if isinstance(result, ApiResult):
        main = result.main
        if main is None:
            return "—", True
        return f"{main.endpoint} → {main.status or main.outcome} {main.outcome}", main.ok
    if isinstance(result, WebResult):
        return f"{result.status or ''} {result.outcome}".strip(), result.outcome == "loads"
    if isinstance(result, HarSummary):
        return f"{result.total} requests, {result.failing_pct}% failing", not result.failing
    return "", True


async def examine(checkup: Checkup, progress: Progress | None = None) -> Findings:
    progress = progress or Quiet()
    c = checkup
    findings = Findings(c.profile, c.url, read_environment(c.env, c.interfaces), c.answers)
    if c.har is not None:  # first: a bad file should fail before anything is sent
        findings.har = await step(progress, "har", asyncio.to_thread(read_har, c.har))
    # the roots are read only when a chain is to be judged (certifi's bundle: ~150 parses)
    tls = any(e.tls for e in c.endpoints) and "network" not in c.skip
    trust = await asyncio.to_thread(c.trust) if tls else TrustStore("unused", [])
    async with httpx.AsyncClient(timeout=c.timeout, verify=c.verify(), trust_env=True,
                                 headers={"user-agent": f"gatehouse-doctor/{__version__}"}
                                 ) as client:
        summary_task = (asyncio.ensure_future(fetch_summary(client, c.status_url, c.deadline))
                        if c.status_url and "status" not in c.skip else None)
        if summary_task is not None:
            progress.started("status")
        jobs: dict[str, asyncio.Future[object]] = {}
        if "network" not in c.skip and c.endpoints:
            jobs["network"] = asyncio.ensure_future(step(
                progress, "network", probe_network(c.endpoints, trust, c.system_store,
                                                   min(c.timeout, 10.0))))
        if "api" not in c.skip:
            jobs["api"] = asyncio.ensure_future(step(
                progress, "api", check_api(client, c.profile.api_base, c.api_key, c.model)))
        if "web" not in c.skip:
            jobs["web"] = asyncio.ensure_future(step(
                progress, "web", check_web(client, c.profile.web_url)))
        done = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
        findings.hosts = done.get("network", [])  # type: ignore[assignment]
        findings.api = done.get("api")  # type: ignore[assignment]
        findings.web = done.get("web")  # type: ignore[assignment]
        if "health" not in c.skip:
            progress.started("health")
            await read_traffic(client, c, findings)
            progress.finished("health", *traffic_summary(findings))
        if summary_task is not None and c.status_url:
            model = findings.api.model if findings.api else c.model
            wanted = c.components or (*c.profile.components, *([model] if model else []))
            findings.status = status_result(await summary_task, wanted)
            s = findings.status
            progress.finished("status", (f"{len(s.ours)} incident(s) for you, "
                                         f"{len(s.others)} elsewhere") if s.fetched
                              else f"unreadable: {s.error}", s.fetched and not s.ours)
    return findings


async def read_traffic(client: httpx.AsyncClient, c: Checkup, f: Findings) -> None:
    """The caller's health (the org's, and the model's) and the lookup of the failed request
    ids — the doctor's own and the user's — each bounded; why they were not read otherwise."""
    if c.profile.name != "gatehouse":
        f.traffic_unread = f"the {c.profile.name} profile offers no health view or lookups"
        return
    if not c.api_key:
        f.traffic_unread = "no API key: they are read with your key"
        return
    main = f.api.main if f.api else None
    if main is not None and main.outcome in (UNREACHABLE, TLS_ERROR):
        f.traffic_unread = "the service did not answer the doctor's requests"
        return
    if main is not None and main.outcome == MALFORMED_KEY:
        f.traffic_unread = "they are read with your key, which cannot be sent as it is"
        return
    if main is not None and main.outcome == NOT_API:
        f.traffic_unread = "something other than the API answered the doctor's requests"
        return
    model = f.api.model if f.api else c.model
    ids = [(call.request_id, "doctor") for call in (f.api.calls if f.api else [])
           if not call.ok and call.request_id]
    ids += [(i, "you") for i in c.request_ids]
    base = c.profile.api_base
    reads: list[Awaitable[object]] = [read_health(client, base, c.api_key, None, c.deadline),
                                      look_up(client, base, c.api_key, ids, c.deadline)]
    if model:
        reads.append(read_health(client, base, c.api_key, model, c.deadline))
    org, lookups, *by_model = await asyncio.gather(*reads)
    f.health = org  # type: ignore[assignment]
    f.lookups = lookups  # type: ignore[assignment]
    f.model_health = by_model[0] if by_model else None  # type: ignore[assignment]


def traffic_summary(f: Findings) -> tuple[str, bool]:
    if f.traffic_unread:
        return f"not read: {f.traffic_unread}", True
    h: HealthResult | None = f.model_health or f.health
    if h is None or not h.fetched:
        return f"unreadable: {h.error if h else 'not read'}", True
    failed = h.service_failed
    looked = f"; {len(f.lookups)} request(s) looked up" if f.lookups else ""
    return ((f"{h.requests} request(s) in {h.window}, {failed} failed on the service's side"
            f"{looked}"), not failed)
