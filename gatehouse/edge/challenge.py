"""The human check of the web path: a proof-of-work page, and the clearance it earns.

The edge asks :meth:`Challenge.cleared` (a signature check, no I/O) and, when that is False,
answers with :meth:`Challenge.challenge`: a page whose inline script solves the puzzle and
posts the answer to ``/_gatehouse/challenge/verify`` (:mod:`gatehouse.edge.checkpoint`), or
— for ``fetch``/XHR and programs — a 403 JSON body. Both carry ``gatehouse-mitigated:
challenge`` so a script can tell a challenge from an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.resources import files
from urllib.parse import quote

from markupsafe import Markup

from gatehouse.context import Reply
from gatehouse.edge.clearance import Clearances, Verdict
from gatehouse.edge.proof import Puzzles
from gatehouse.edge.signing import Signer, binding
from gatehouse.edge.visitor import OffenseSink, Visitor
from gatehouse.errors import ChallengeRequired
from gatehouse.htmlpage import NOSNIFF, page, page_headers, source_hash
from gatehouse.state.base import State
from gatehouse.telemetry.metrics import Metrics

PREFIX = "/_gatehouse/challenge/"
VERIFY_PATH = PREFIX + "verify"
CHECK_PATH = PREFIX + "check"

SOLVER = files("gatehouse.edge").joinpath("solver.js").read_text(encoding="utf-8")
# the page headers, with the solver (inline, by its hash) as the one script allowed to run
CHALLENGE_HEADERS = {**page_headers(script_src=source_hash(SOLVER)),
                     "content-type": "text/html; charset=utf-8"}
DEFAULT_RULE = "default"


def wants_page(visitor: Visitor) -> bool:
    """A browser navigating (gets the page), not a script fetching (gets JSON)."""
    headers = visitor.headers
    if headers.get("x-requested-with"):
        return False
    if headers.get("sec-fetch-mode", "navigate") not in ("navigate", "nested-navigate"):
        return False
    return visitor.wants_html


def next_of(visitor: Visitor) -> str:
    """Where the browser goes once it passes: the path it asked for, on this site."""
    path = visitor.path
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    # the ASGI path is decoded: encode it again (spaces, non-ASCII) for the form and Location;
    # the query string arrives raw, so only what is not allowed in one is encoded
    quoted = quote(path, safe="/:@!$&'()*+,;=-._~")
    if visitor.query:
        quoted += "?" + quote(visitor.query, safe="/:@!$&'()*+,;=-._~?%")
    return quoted if len(quoted) <= 512 else "/"


class Challenge:
    """Issues puzzles, checks clearance cookies, and keeps the books on both."""

    def __init__(self, derive: Callable[[str], bytes], state: State, metrics: Metrics, *,
                 challenge_ttl: float = 300.0, clearance_ttl: float = 1800.0,
                 cookie_secure: bool | str = "auto", offenses: OffenseSink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.puzzles = Puzzles(Signer(derive("edge challenge")), challenge_ttl, clock)
        self.clearances = Clearances(Signer(derive("edge clearance")), clearance_ttl, clock)
        self.marks = Signer(derive("edge cookie check"))
        self.state = state
        self.metrics = metrics
        self.cookie_secure = cookie_secure
        # the edge that reports offences is built after us (it takes us in its constructor)
        self.offenses = offenses
        self.clock = clock

    @staticmethod
    def bound(visitor: Visitor) -> str:
        return binding(visitor.network, visitor.headers.get("user-agent", ""))

    def verdict(self, visitor: Visitor) -> Verdict:
        return self.clearances.verdict(visitor.headers.get("cookie", ""), self.bound(visitor))

    def cleared(self, visitor: Visitor) -> bool:
        return self.verdict(visitor) is Verdict.CLEARED

    def offense(self, visitor: Visitor) -> None:
        if self.offenses is not None:
            self.offenses.offense(visitor, "challenge_failed")

    def count(self, rule: str, result: str, reason: str = "") -> None:
        self.metrics.challenges.labels(rule or DEFAULT_RULE, result, reason).inc()

    async def challenge(self, visitor: Visitor, difficulty: int, ray_id: str, *,
                        rule: str = "") -> Reply:
        """The check for a visitor without a valid clearance: the page, or its JSON twin."""
        verdict = self.verdict(visitor)
        if verdict is Verdict.FORGED:
            # a cookie we never signed: someone trying their luck (an expired or moved one is
            # just a browser whose clearance ran out, and is not held against it)
            self.count(rule, "failed", "forged_cookie")
            self.offense(visitor)
        if not wants_page(visitor):
            self.count(rule, "issued", "json")
            error = ChallengeRequired(
                "This address is protected by a browser check, which a script or program "
                "cannot pass. Call the API with an API key instead, or open the address in a "
                "browser.", ray_id=ray_id)
            headers = {"content-type": "application/json", "cache-control": "no-store",
                       **NOSNIFF, **error.response_headers()}
            return Reply(error.status, headers, error.body(visitor.request_id or None))
        token, _ = self.puzzles.issue(self.bound(visitor), difficulty, rule)
        self.count(rule, "issued", "page")
        body = page("challenge.html", host=visitor.headers.get("host", "this site")[:253],
                    ray_id=ray_id, token=token, difficulty=difficulty, next=next_of(visitor),
                    verify_url=VERIFY_PATH, script=Markup(SOLVER), request_id=visitor.request_id,
                    clearance_minutes=max(1, round(self.clearances.ttl / 60)))
        headers = {**CHALLENGE_HEADERS, "gatehouse-mitigated": "challenge",
                   "gatehouse-ray": ray_id}
        return Reply(403, headers, body.encode("utf-8"))
