"""The seeds' triage matrix as a decision: from the findings, the branch the user is on, the
next step and when to stop — and an exit code scripts can act on.

The rules, first match wins::

    a live incident on the component that matters        → wait for the incident      10
      (unless the API's own answer is the user's: a bad key, a spent quota, a block)
    a host fails DNS / TCP / TLS                          → network policy             20
    TLS interception (a private root re-signs the chain)  → network policy             21
    something else answers for the API (a proxy's sign-in
      page, a redirect, a blank or broken body)           → network policy             22
    403 1020 (API, page or HAR) / the API is challenged   → network policy             31
    401 / 403 permission / 4xx on the API                 → API-side: auth / request   30, 33
    429 rate limit · 429 insufficient_quota               → API-side: rate · quota     40, 41
    5xx · 503 upstream · 504 / timeout · 503 at_capacity  → API-side: service          50, 51
    the browser fails (HAR, a challenge loop) but the
      program's probes pass                               → clean browser state        32
    nothing wrong                                         → it's fine                   0
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gatehouse.doctor.api import (
    MALFORMED_KEY,
    NOT_API,
    TIMEOUT,
    TLS_ERROR,
    UNREACHABLE,
    Call,
)
from gatehouse.doctor.findings import Findings


class Branch(StrEnum):
    WAIT_FOR_INCIDENT = "wait_for_incident"
    CLEAN_BROWSER_STATE = "clean_browser_state"
    NETWORK_POLICY = "network_policy"
    API_SIDE = "api_side"
    FINE = "fine"


# outcome → (exit code, branch, meaning): the table docs/doctor.md prints
EXIT_CODES: dict[str, tuple[int, Branch, str]] = {
    "ok": (0, Branch.FINE, "everything the doctor can test works"),
    "incident": (10, Branch.WAIT_FOR_INCIDENT, "a live incident on the component that matters"),
    "network": (20, Branch.NETWORK_POLICY, "DNS, TCP or TLS fails for a host"),
    "tls_interception": (21, Branch.NETWORK_POLICY, "TLS interception (SSL inspection, a private root)"),
    "not_api": (22, Branch.NETWORK_POLICY, "not the API answering: a proxy's or portal's page, a redirect, a blank or broken body with a status below 400"),
    "unauthorized": (30, Branch.API_SIDE, "401: no key, a wrong, revoked or expired key, a key that cannot be sent (a line break, a non-ASCII character), or a 403 permission error"),
    "blocked": (31, Branch.NETWORK_POLICY, "403 1020 access denied, or the API path is challenged"),
    "browser": (32, Branch.CLEAN_BROWSER_STATE, "the browser fails where the doctor's own requests pass"),
    "request_rejected": (33, Branch.API_SIDE, "another 4xx: the request itself (e.g. model_not_found)"),
    "rate_limited": (40, Branch.API_SIDE, "429 rate_limit_exceeded"),
    "quota": (41, Branch.API_SIDE, "429 insufficient_quota"),
    "service_error": (50, Branch.API_SIDE, "500, 503 upstream_unavailable, 504 or a timeout"),
    "at_capacity": (51, Branch.API_SIDE, "503 at_capacity"),
}
# the API's answers an incident does not explain: they are the user's to fix
USERS_OWN = {"unauthorized", "permission_denied", "quota_exceeded", "access_denied",
             "client_error", MALFORMED_KEY, NOT_API}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str
    headline: str
    next_step: str
    stop_when: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome][0]

    @property
    def branch(self) -> Branch:
        return EXIT_CODES[self.outcome][1]


def ids(call: Call) -> str:
    parts = [f"request id {call.request_id}" if call.request_id else "",
             f"Ray ID {call.ray_id}" if call.ray_id else ""]
    return " · ".join(p for p in parts if p) or "no request id"


def escalate(f: Findings, usual: str) -> str:
    """The usual next step, or — when the user already tried both — support."""
    a = f.answers
    if a.private_window and a.other_network:
        return ("You already tried a private window and another network: send this report "
                "to support (it has the ids they need).")
    return usual


def decide(f: Findings) -> Verdict:
    for rule in (incident, network, interception, not_the_api, blocked, api_side, browser):
        verdict = rule(f)
        if verdict is not None:
            return verdict
    return fine(f)


def incident(f: Findings) -> Verdict | None:
    s = f.status
    main = f.api.main if f.api else None
    if s is None or not s.trouble or (main is not None and main.outcome in USERS_OWN):
        return None
    if s.ours:
        first = s.ours[0]
        what = f"{first.name} ({first.status}, impact {first.impact})"
        link = first.shortlink or s.url
    else:
        what = ", ".join(f"{name} is {state}" for name, state in s.degraded.items())
        link = s.url
    return Verdict(
        "incident", f"Live incident on {', '.join(s.watched) or 'the service'}: {what}",
        f"Nothing to fix on your side: follow {link} and retry with backoff. Do not reinstall, "
        "clear data or change networks for this.",
        "the incident is resolved on the status page and `gatehouse doctor` exits 0")


def network(f: Findings) -> Verdict | None:
    down = [h for h in f.hosts if not h.reachable]
    main = f.api.main if f.api else None
    if not down or (f.environment.proxied and main is not None and main.ok):
        return None  # a proxy that works: direct connections are expected to fail
    h = down[0]
    steps = {"dns": "the name does not resolve: check the DNS server (or the VPN's), try "
                    "another resolver or network",
             "tcp": "the connection is refused or dropped: a firewall, proxy or VPN blocks "
                    "this host and port; try another network",
             "tls": "the TLS handshake fails: a proxy or middlebox interferes; try another "
                    "network"}
    proxies = (f" Proxies in the environment: {', '.join(f.environment.proxies)}."
               if f.environment.proxies else "")
    return Verdict(
        "network", f"{h.endpoint.label}: {h.failed_step} failed ({h.error})",
        escalate(f, steps[h.failed_step or "tcp"] + "." + proxies),
        "DNS, TCP and TLS pass for every host")


def interception(f: Findings) -> Verdict | None:
    caught = [h for h in f.hosts if h.intercepted]
    main = f.api.main if f.api else None
    if not caught and not (main is not None and main.outcome == TLS_ERROR):
        return None
    if caught:
        assert caught[0].chain is not None
        what = f"{', '.join(h.endpoint.host for h in caught)}: {caught[0].chain.explanation}"
    else:
        what = f"the API's certificate is not trusted ({main.message if main else ''})"
    return Verdict(
        "tls_interception", f"TLS interception: {what}",
        escalate(f, "This network inspects encrypted traffic (company Wi-Fi, SSL inspection, "
                    "an antivirus web shield). Try another network (e.g. a phone hotspot), or "
                    "ask IT to exempt these hosts from inspection."),
        "every host's chain is issued by a public CA (the doctor reports no interception)")


def not_the_api(f: Findings) -> Verdict | None:
    main = f.api.main if f.api else None
    if main is None or main.outcome != NOT_API:
        return None
    proxies = (f" Proxies in the environment: {', '.join(f.environment.proxies)}: try without "
               "them." if f.environment.proxies else "")
    return Verdict(
        "not_api", f"Not the API answering {main.endpoint}: {main.message}",
        escalate(f, "Something other than the API answered: a proxy, captive portal or "
                    "firewall between you and the service (a sign-in page, a redirect to one), "
                    "or a URL that is not the API's base (it usually ends in /v1). Check the "
                    "URL, sign in to the network's portal if it has one, or try another "
                    "network (a phone hotspot)." + proxies),
        "GET /v1/models answers the API's model list and the completion a completion")


def blocked(f: Findings) -> Verdict | None:
    main = f.api.main if f.api else None
    if main is not None and main.outcome in ("access_denied", "challenge"):
        kind = "Access denied (1020)" if main.outcome == "access_denied" else "The API path is challenged"
        return Verdict(
            "blocked", f"{kind} on {main.endpoint} — {ids(main)}",
            escalate(f, "The service's firewall matched your network or address; it may not "
                        "be your fault (shared networks, VPNs). Switch the VPN or proxy off or "
                        "try another network; if it persists, send support the Ray ID."),
            "the API answers without 403 from your network, or support lifted the block")
    web_blocked = f.web is not None and f.web.outcome == "blocked"
    if web_blocked or (f.har is not None and f.har.blocked):
        ray = (f.web.ray_id if f.web and f.web.ray_id else
               (f.har.ray_ids[0] if f.har and f.har.ray_ids else None))
        return Verdict(
            "blocked", f"Access denied (1020) on the web path — Ray ID {ray or 'not seen'}",
            escalate(f, "Your network or address is blocked by the service's firewall. Switch "
                        "the VPN or proxy off or try another network; if it persists, send "
                        "support the Ray ID."),
            "the page loads from your network, or support lifted the block")
    return None


def api_side(f: Findings) -> Verdict | None:
    main = f.api.main if f.api else None
    if main is None or main.ok:
        return None
    o, where = main.outcome, f"{main.endpoint} — {ids(main)}"
    if o == MALFORMED_KEY:
        return Verdict("unauthorized", f"Your API key cannot be sent: {main.message}",
                       "Copy the key again without the character named (a key read from a "
                       "file or pasted from a document often keeps a line break, spaces or "
                       "typographic quotes) wherever it is set: --api-key, $GATEHOUSE_API_KEY "
                       "or $OPENAI_API_KEY.",
                       "the doctor sends the key and the API answers 200")
    if o in ("unauthorized", "permission_denied"):
        advice = {"missing_api_key": "No key was sent: pass --api-key or set OPENAI_API_KEY "
                                     "/ GATEHOUSE_API_KEY.",
                  "session_expired": "The session expired: sign in again."}.get(
            main.code or "", "The key is not valid for this: check the whole key was copied; a "
                             "revoked or expired key never comes back — ask your administrator "
                             "for a new one.")
        return Verdict("unauthorized", f"{main.status} {main.code or o} on {where}", advice,
                       "the API call answers 200 with the right key")
    if o == "quota_exceeded":
        return Verdict("quota", f"429 insufficient_quota on {where}",
                       "The usage budget is spent; retrying will not help. See GET /v1/usage "
                       "for when it resets, or ask your administrator for a larger budget.",
                       "the budget resets or is raised (GET /v1/usage shows room)")
    if o == "rate_limited":
        wait = f" ({main.retry_after:.0f} s)" if main.retry_after is not None else ""
        return Verdict("rate_limited", f"429 rate_limit_exceeded on {where}",
                       f"Slow down: wait for Retry-After{wait}, then retry with backoff; "
                       "spread requests or ask for a higher tier.",
                       "requests pass again after the window resets")
    if o == "at_capacity":
        return Verdict("at_capacity", f"503 at_capacity on {where}",
                       "The model is busy serving others; nothing is wrong with your request. "
                       "Retry after Retry-After with backoff.",
                       "the API answers 200 again, or an incident is posted (then wait for it)")
    if o in ("server_error", "upstream_unavailable", TIMEOUT, UNREACHABLE):
        return Verdict("service_error", f"{main.status or o} {main.code or ''} on {where}".replace("  ", " "),
                       "This is on the service's side. Retry with backoff; if it persists for "
                       "more than a few minutes and no incident is posted, send this report "
                       "to support (it has the request ids).",
                       "the API answers 200 again, or an incident is posted (then wait for it)")
    return Verdict("request_rejected", f"{main.status} {main.code or o} on {where}",
                   f"The service refused the request itself: {main.message or 'see the code'}.",
                   "the API call answers 200")


def browser(f: Findings) -> Verdict | None:
    har = f.har
    web_error = f.web is not None and f.web.outcome == "error" and (f.web.status or 0) >= 500
    if web_error and f.web is not None:
        return Verdict("service_error", f"The web page answers {f.web.status} — "
                       f"request id {f.web.request_id or 'not seen'}",
                       "This is on the service's side. Retry in a moment; if it persists, "
                       "send this report to support.", "the page loads")
    if har is None or not har.failing:
        return None
    looping = har.challenges >= 2
    what = (f"{har.challenges} human checks in a row in your browser" if looping else
            f"{len(har.failing)} of {har.total} requests failed in your browser "
            f"({har.failing_pct}%)")
    if f.answers.private_window:
        step = ("It also fails in a private window, so it is not this profile's state: try "
                "another network next (mobile data, VPN off).")
    else:
        step = ("The doctor's own requests pass, so this browser's state is the suspect: open "
                "a private window (or a clean profile) and try again; if that works, clear "
                "this site's cookies and data and switch extensions off one by one.")
    return Verdict("browser", f"The browser fails where the doctor passes: {what}",
                   escalate(f, step),
                   "the page works in a private window (then it was browser state) — or, if it "
                   "fails there and on another network too, support has this report")


def fine(f: Findings) -> Verdict:
    notes = []
    if f.web is not None and f.web.outcome == "challenge":
        notes.append("the web page asks browsers for a one-time automatic check")
    if f.status is not None and f.status.others:
        notes.append(f"{len(f.status.others)} incident(s) on other components, not yours")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return Verdict("ok", f"Everything the doctor can test works{extra}",
                   "If your browser still fails, try a private window, then save a HAR from "
                   "DevTools → Network and run `gatehouse doctor --har file.har`.",
                   "nothing to do")
