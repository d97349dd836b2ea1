"""The routes of the human check, under ``/_gatehouse/challenge/`` (never challenged).

``POST verify`` takes the solved puzzle (a form navigation: ``token``, ``counter``, ``next``)
and checks, in order: our signature, expiry, the binding to this network and user agent, the
proof of work, and that the nonce is unused (claimed in the state layer for the puzzle's
lifetime, so a replay is refused on every replica). It then sets the clearance cookie and
sends the browser to ``GET check``, which looks for that cookie before going on to ``next``:
a browser that refuses cookies gets a page saying so instead of a loop of challenges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gatehouse.edge.challenge import CHECK_PATH, VERIFY_PATH, Challenge
from gatehouse.edge.clearance import COOKIE, Verdict
from gatehouse.edge.proof import solves
from gatehouse.edge.rays import RayLog, new_ray
from gatehouse.edge.signing import b64, same, unb64
from gatehouse.edge.visitor import Visitor
from gatehouse.errors import ChallengeRequired, CookiesRequired
from gatehouse.state.base import StateError
from gatehouse.web.cookies import safe_next, set_cookie, wants_secure
from gatehouse.web.forms import read_form
from gatehouse.web.pages import ERROR_HANDLERS
from gatehouse.web.render import PageHeaders, problem

log = logging.getLogger("gatehouse.edge")

MARK_SECONDS = 60  # how long the cookie check after a verify stays valid
FAILURES = {
    "forged": "The answer to the browser check was not for a check this site gave out.",
    "rebound": "The browser check was started on another network or in another browser "
               "than the one it was finished in.",
    "wrong_answer": "The answer to the browser check was not right.",
    "replayed": "This browser check was already used; each one can be used only once.",
}
AGAIN = ("Go back to let the check run again; it is automatic. If it keeps failing, contact "
         "support with the Ray ID.")


class Checkpoint:
    def __init__(self, challenge: Challenge, visitor_of: Callable[[dict[str, Any]], Visitor], *,
                 rays: RayLog | None = None, ray_id: Callable[[], str] = new_ray) -> None:
        self.challenge = challenge
        self.visitor_of = visitor_of
        self.rays = rays  # where refusals are recorded, so support can look their Ray ID up
        self.ray_id = ray_id

    def _visitor(self, request: Request) -> Visitor:
        # the edge guard in front of this app has worked it out already
        found = request.scope.get("state", {}).get("visitor")
        return found if isinstance(found, Visitor) else self.visitor_of(dict(request.scope))

    def _ray(self, visitor: Visitor, rule: str, reason: str) -> str:
        ray = self.ray_id()
        if self.rays is not None:
            self.rays.record(ray, "challenge_failed", visitor, rule, reason)
        return ray

    async def verify(self, request: Request) -> Response:
        ch = self.challenge
        form = await read_form(request)
        target = safe_next(form.get("next"), "/")
        token, counter = form.get("token", ""), form.get("counter", "")
        visitor = self._visitor(request)
        puzzle = ch.puzzles.open(token)
        if puzzle is None:
            return self._refuse(request, visitor, "", "forged", target)
        if ch.puzzles.expired(puzzle):
            # left open too long: a fresh check, not a reproach (the server's clock decides,
            # so the next one cannot be born expired)
            ch.count(puzzle.rule, "failed", "expired")
            return RedirectResponse(target, 303)
        bound = ch.bound(visitor)
        if not same(puzzle.bound, bound):
            return self._refuse(request, visitor, puzzle.rule, "rebound", target)
        if not solves(token, counter, puzzle.difficulty):
            return self._refuse(request, visitor, puzzle.rule, "wrong_answer", target)
        try:
            fresh = await ch.state.put_new(f"edge:nonce:{puzzle.nonce}", b"1",
                                           max(1.0, puzzle.expires - ch.clock()))
        except StateError:
            # the state layer is down: let the solved check through rather than lock every
            # new visitor out; a replay is still bound to this network and browser
            log.warning("challenge nonce not recorded: the state layer is unavailable")
            fresh = True
        if not fresh:
            return self._refuse(request, visitor, puzzle.rule, "replayed", target)
        ch.count(puzzle.rule, "solved")
        mark = ch.marks.sign(f"{int(ch.clock()) + MARK_SECONDS}.{b64(puzzle.rule.encode())}"
                             f".{target}")
        response = RedirectResponse(f"{CHECK_PATH}?{urlencode({'t': mark})}", 303)
        set_cookie(response, COOKIE, ch.clearances.mint(bound), path="/",
                   max_age=int(ch.clearances.ttl), secure=wants_secure(request, ch.cookie_secure))
        return response

    def _refuse(self, request: Request, visitor: Visitor, rule: str, reason: str,
                target: str) -> Response:
        self.challenge.count(rule, "failed", reason)
        self.challenge.offense(visitor)
        ray = self._ray(visitor, rule, reason)
        return problem(request, ChallengeRequired(FAILURES[reason], ray_id=ray),
                       advice=AGAIN, back=target)

    async def check(self, request: Request) -> Response:
        """Right after a verify: did the clearance cookie come back? Go on, or say why not."""
        ch = self.challenge
        text = ch.marks.unsign(request.query_params.get("t", ""), max_length=1024) or ""
        expires, _, rest = text.partition(".")
        rule, _, target = rest.partition(".")
        if not expires.isdigit() or ch.clock() >= int(expires):
            # not from a verify just now (an old bookmark, a reload much later): just go on
            return RedirectResponse(safe_next(target, "/"), 303)
        target = safe_next(target, "/")
        visitor = self._visitor(request)
        if ch.verdict(visitor) is Verdict.CLEARED:
            return RedirectResponse(target, 303)
        label = (unb64(rule) or b"").decode("utf-8", "replace")
        ch.count(label, "failed", "cookies_blocked")
        return problem(request, CookiesRequired(
            "Your browser passed the check, but did not keep the cookie that records it, so "
            "the site would only ask again.",
            ray_id=self._ray(visitor, label, "cookies_blocked")), back=target)


def build_challenge_app(checkpoint: Checkpoint) -> Starlette:
    return Starlette(
        routes=[Route(VERIFY_PATH, checkpoint.verify, methods=["POST"]),
                Route(CHECK_PATH, checkpoint.check, methods=["GET"])],
        middleware=[Middleware(PageHeaders)],
        exception_handlers=ERROR_HANDLERS,
    )
