"""The edge's one decision, ``Edge.screen(visitor) -> Verdict``, used by the pipeline stage
(/v1, 404s) and by the guard in front of the mounted apps (web pages, admin API).

    rules (first match) ── allow ─────────────────────────────────► pass (no ban, no count)
        │ deny / no match / challenge
        ▼
    banned? ── yes ─► 403 1020 (Ray ID)        deny rule ─► 403 1020 (Ray ID)
        │ no
        ▼
    detector counts ─► challenge rule (web path) ─► cleared? pass : the challenge page
                    └► otherwise pass

A banned or denied answer costs dict lookups and a small JSON body: no SQL, no state round
trip, no upstream. Its Ray event is buffered and written later (:mod:`gatehouse.edge.rays`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatehouse.config import EdgeSettings
from gatehouse.context import Reply, header_dict, prefers_html
from gatehouse.edge.bans import Ban, Bans
from gatehouse.edge.client import ClientResolver, network_of, parse_ip
from gatehouse.edge.detector import Detector
from gatehouse.edge.geo import Geo
from gatehouse.edge.rays import RayLog, new_ray
from gatehouse.edge.rulebook import RuleBook
from gatehouse.edge.rules import Rule
from gatehouse.edge.visitor import Challenger, IPAddress, OffenseKind, Visitor
from gatehouse.errors import AccessDenied
from gatehouse.telemetry.metrics import Metrics

log = logging.getLogger("gatehouse.edge")
# never challenged: programs (API, admin, status JSON), feeds and the operator's endpoints
API_PREFIXES = ("/v1/", "/admin/", "/api/", "/_gatehouse/")
API_PATHS = frozenset({"/v1", "/admin", "/api", "/healthz", "/readyz", "/metrics"})
FEED_SUFFIXES = (".atom", ".rss", ".xml")
RULE_DENIED = "Access denied: the firewall of this service blocks requests like this one."
BANNED = ("Access denied: too many requests or failed sign-ins came from your address or "
          "network, so it is blocked for a while.")
BANNED_BY_HAND = ("Access denied: the operators of this service have blocked your address or "
                  "network for a while.")


def is_api_path(path: str) -> bool:
    """True for the paths the human check never applies to: programs' paths, where a key (not
    a proof of work) is what proves who is asking. Decided by the path alone: what a request
    carries (an ``Authorization`` header, say) never exempts a web page, whose visitors could
    write anything there (issue 12)."""
    return path in API_PATHS or path.startswith(API_PREFIXES) or path.endswith(FEED_SUFFIXES)


@dataclass(slots=True)
class Verdict:
    """Pass (both None), refuse (``error``, rendered by the caller as JSON or a page), or
    answer with a ready reply (``reply``: the challenge)."""

    error: AccessDenied | None = None
    reply: Reply | None = None


PASS = Verdict()


class Edge:
    def __init__(self, settings: EdgeSettings, rules: RuleBook, bans: Bans, detector: Detector,
                 rays: RayLog, metrics: Metrics, challenger: Challenger | None = None,
                 geo: Geo | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.bans = bans
        self.detector = detector
        self.rays = rays
        self.metrics = metrics
        # None until the human check is wired in: a challenge rule then denies (app.py)
        self.challenger = challenger
        self.geo = geo
        self.resolver = ClientResolver(settings.trusted_proxies, settings.forwarded_header)
        self._v4, self._v6 = settings.network_prefix_v4, settings.network_prefix_v6
        self._blocks: dict[tuple[str, str], Any] = {}

    # -- who is asking --------------------------------------------------------------------
    def client_ip(self, peer: str | None, headers: dict[str, str]) -> IPAddress:
        return self.resolver.resolve(peer, headers)

    def visitor(self, method: str, path: str, headers: dict[str, str],
                peer: str | None) -> Visitor:
        ip = self.resolver.resolve(peer, headers)
        network = network_of(ip, self._v4, self._v6)
        return Visitor(ip, network, method, path, headers,
                       is_api_path(path), prefers_html(headers.get("accept", "")))

    def visitor_of_scope(self, scope: Mapping[str, Any]) -> Visitor:
        """The visitor of a raw ASGI scope (the guard in front of mounted apps uses this)."""
        headers = header_dict(scope.get("headers", ()))
        client = scope.get("client")
        visitor = self.visitor(scope.get("method", "GET"), scope.get("path", "/"), headers,
                               client[0] if client else None)
        visitor.query = scope.get("query_string", b"").decode("latin-1")
        return visitor

    # -- the decision ---------------------------------------------------------------------
    async def screen(self, visitor: Visitor) -> Verdict:
        rule = self.rules.current.match(visitor, self.geo)
        if rule is not None and rule.action == "allow":
            return PASS
        ban = self.bans.banned(visitor.ip)
        if ban is not None:
            return self._deny(visitor, "ban", ban)
        if rule is not None and rule.action == "deny":
            return self._deny(visitor, rule.label, None)
        if self.detector.seen(visitor) and (ban := self.bans.banned(visitor.ip)) is not None:
            return self._deny(visitor, "ban", ban)
        if rule is not None:  # a challenge rule (never matched for API clients)
            return await self._challenge(visitor, rule)
        return PASS

    async def screen_anonymous(self, visitor: Visitor) -> Verdict:
        """After identity, for a caller of an API path that nobody vouches for (open mode: no
        key, or one that is not ours): challenge rules apply to it as to the web path, so only
        a verified key or a live session skips them. Free unless a challenge rule exists."""
        rules = self.rules.current
        if not rules.challenges:
            return PASS
        rule = rules.match(dataclasses.replace(visitor, api_client=False), self.geo)
        if rule is None or rule.action != "challenge":
            return PASS  # an allow or deny rule was applied by screen() already
        return await self._challenge(visitor, rule)

    async def _challenge(self, visitor: Visitor, rule: Rule) -> Verdict:
        challenger = self.challenger
        if challenger is None:  # no human check available: deny rather than let through
            return self._deny(visitor, rule.label, None)
        if challenger.cleared(visitor):
            return PASS
        ray = new_ray()
        self.rays.record(ray, "challenge", visitor, rule.label, "no clearance")
        difficulty = rule.difficulty or self.settings.challenge_difficulty
        return Verdict(reply=await challenger.challenge(visitor, difficulty, ray,
                                                        rule=rule.label))

    def _deny(self, visitor: Visitor, label: str, ban: Ban | None) -> Verdict:
        ray = new_ray()
        reason = f"banned {ban.subject}: {ban.reason}" if ban else f"rule {label}"
        self.rays.record(ray, "deny", visitor, label, reason)
        kind = "ban" if ban else "rule"
        counter = self._blocks.get((label, kind))
        if counter is None:  # labelled children looked up once (labels() costs µs)
            counter = self._blocks[(label, kind)] = self.metrics.edge_blocks.labels(label, kind)
        counter.inc()
        retry = max(1.0, ban.until - time.time()) if ban else None
        # the Ray ID in the message too: SDKs show the message, not the rest of the body
        said = RULE_DENIED if ban is None else BANNED if ban.strikes else BANNED_BY_HAND
        message = f"{said} (Error 1020, Ray ID {ray})"
        return Verdict(AccessDenied(message, ray_id=ray,
                                    client_ip=visitor.ip, cause=f"ray {ray}: {reason}",
                                    retry_after=retry))

    def offense(self, visitor: Visitor, kind: OffenseKind) -> None:
        """Count a 401 or a failed challenge against the visitor (the detector may ban)."""
        self.detector.offense(visitor, kind)

    # -- the connection layer (gatehouse/edge/connections.py) ------------------------------
    def is_proxy(self, peer: str) -> bool:
        """The socket peer is one of ``trusted_proxies``: many clients share its connections."""
        ip = parse_ip(peer)
        return ip is not None and bool(self.resolver.trusted) and ip in self.resolver.trusted

    def slow_client(self, peer: str) -> None:
        """A connection of ``peer`` was cut for sending its head or body too slowly. A
        trusted proxy is never blamed (it buffers for its clients; nginx's own timeouts
        govern them)."""
        ip = parse_ip(peer)
        if ip is not None and not self.is_proxy(peer):
            self.detector.offense_by(ip, "slow_client")

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.bans.start()
        await self.rules.start(self.bans.state)
        await self.rays.start()

    async def aclose(self) -> None:
        await self.rules.aclose()
        await self.detector.aclose()
        await self.bans.aclose()
        await self.rays.aclose()
        if self.geo is not None:
            self.geo.close()
