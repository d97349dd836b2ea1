"""Is it me or them? One verdict line with its evidence, from three sources and the doctor's
own requests:

- the status API (``/api/v2/summary.json``): what the service says about itself, for everyone;
- the caller's traffic (``GET /v1/health?window=5m``, and ``&model=M``): how the caller's
  organization's requests fared — failed on the service's side (5xx) or refused for the account
  (auth, quota, rate limit, invalid requests, the firewall);
- where failed requests stopped (``GET /v1/requests/{id}``): the doctor's own failures and the
  ids the user passes; the stage that refused a request says whose problem it is.

First match wins (docs/doctor.md lists every line)::

    the key cannot be sent (a line break, a non-ASCII character)   → you (the key)
    an answer below 400 that is not the API's (a proxy's page)     → you (network or URL)
    no HTTP answer at all, the service not known to be in trouble → you (never reached it),
                                                or unclear when nothing else could be read
    a request refused at a stage that is the caller's              → you (that stage)
    an incident on the component, service-side failures in the
      caller's traffic (≥ 5 % and ≥ 2), or a request that failed
      at a service stage                                           → service ("not you")
    the caller's traffic refused for the account (≥ 5 % and ≥ 2)   → you (the account's limits)
    the browser fails (HAR, 1020 on the page) where the doctor passes → you (browser or network)
    something was read and nothing is wrong                        → none
    nothing could be read                                          → unclear
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gatehouse.doctor.api import MALFORMED_KEY, NOT_API, TLS_ERROR, UNREACHABLE, Call
from gatehouse.doctor.evidence import (
    breakdown,
    evidence,
    incident_text,
    read_health,
    window,
)
from gatehouse.doctor.findings import Findings
from gatehouse.doctor.health import SERVICE_CLASSES, HealthResult
from gatehouse.doctor.lookup import CLASS_OF_OUTCOME, stage_of

SERVICE_PCT = 5.0  # a share of failures that is a trend, not one unlucky request …
MIN_FAILED = 2     # … and a count (one failure in three requests is not a trend)


class Side(StrEnum):
    YOU = "you"
    SERVICE = "service"
    NONE = "none"
    UNCLEAR = "unclear"


@dataclass(slots=True)
class Attribution:
    side: Side
    line: str
    stage: str | None = None
    evidence: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failure:
    """A request that did not succeed: looked up (the stage is the gateway's word) or the
    doctor's own answer (the stage inferred from the error's class)."""

    request_id: str | None
    source: str
    status: int | None
    error_class: str
    code: str | None

    @property
    def stage(self) -> str | None:
        return stage_of(self.error_class, self.code)

    @property
    def service_side(self) -> bool:
        return self.error_class in SERVICE_CLASSES

    @property
    def what(self) -> str:
        return self.code or self.error_class


def failures(f: Findings) -> list[Failure]:
    """Looked-up failures first, then the doctor's own failed answers not looked up."""
    found = [Failure(x.request_id, "the doctor's request" if x.asked_by == "doctor"
                     else "your request", x.status, x.error_class or "", x.error_code)
             for x in f.lookups if x.failed]
    known = {x.request_id for x in f.lookups if x.found}
    for call in f.api.calls if f.api else []:
        error_class = CLASS_OF_OUTCOME.get(call.outcome)
        if call.ok or error_class is None or (call.request_id or "") in known:
            continue
        code = call.code if call.status is not None else "no answer within the timeout"
        found.append(Failure(call.request_id, f"the doctor's {call.endpoint}", call.status,
                             error_class, code))
    return found


def unanswered(f: Findings) -> Call | None:
    """The doctor's API call that got no HTTP answer at all (network, TLS)."""
    main = f.api.main if f.api else None
    return main if main is not None and main.outcome in (UNREACHABLE, TLS_ERROR) else None


def trend(h: HealthResult | None, failed: int) -> bool:
    pct = h.pct(failed) if h else None
    return pct is not None and failed >= MIN_FAILED and pct >= SERVICE_PCT


# what to say of a failure at each stage: the caller's, then the service's
YOURS = {
    "quota": "your requests failed at the quota stage ({what}) — {why}",
    "identity": "your requests failed at the identity stage ({what}) — the key (or session) "
                "is yours to fix",
    "edge": "your requests were refused at the edge ({what}) — the service's firewall matched "
            "your network or address",
    "request": "your requests were refused as invalid ({what}) — the request itself needs "
               "fixing",
    "client": "your client went away before its answers were complete ({what}) — look at your "
              "client's timeouts",
}
THEIRS = {
    "admission": "your requests were shed at the admission stage ({what}): the model is busy",
    "upstream": "your requests failed at the upstream stage ({what})",
}


def yours(x: Failure) -> str:
    why = ("this is your account's limit" if x.code == "insufficient_quota"
           else "you are sending faster than your limits allow")
    return YOURS.get(x.stage or "", "your requests failed ({what}) — on your side").format(
        what=x.what, why=why)


def theirs(x: Failure) -> str:
    return THEIRS.get(x.stage or "", "your requests failed at the {stage} stage ({what})").format(
        what=x.what, stage=x.stage)


@dataclass(slots=True)
class Facts:
    """What the rules weigh, read once from the findings."""

    incident: str | None          # trouble on the status page, in words
    status_fine: bool             # the status page was read and shows nothing for us
    health: HealthResult | None   # the narrowest health view read
    trend: bool                   # it shows a trend of service-side failures
    mine: list[Failure]           # failed at a stage of the caller's
    theirs: list[Failure]         # failed at a stage of the service's
    lost: Call | None             # the doctor's call that got no answer
    main_ok: bool

    @property
    def healthy(self) -> bool:
        """Known healthy: the status page or the caller's traffic vouches for it."""
        return ((self.status_fine or (self.health is not None and not self.trend))
                and not self.theirs)

    def failing(self, how: str = "failed") -> str:
        """``12.5% of requests to m failed in the last 5 minutes``."""
        h = self.health
        assert h is not None
        return f"{h.pct(h.service_failed)}% of {h.subject} {how} in the last {window(h)}"


def facts(f: Findings, now: datetime) -> Facts:
    s = f.status
    h = read_health(f)
    fails = failures(f)
    main = f.api.main if f.api else None
    return Facts(
        incident=incident_text(s, now) if s is not None and s.fetched and s.trouble else None,
        status_fine=s is not None and s.fetched and not s.trouble, health=h,
        trend=h is not None and trend(h, h.service_failed),
        mine=[x for x in fails if not x.service_side], theirs=[x for x in fails if x.service_side],
        lost=unanswered(f), main_ok=main is not None and main.ok)


Said = tuple[Side, str, str | None]  # side, line, stage


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def unsendable_key(k: Facts, f: Findings) -> Said | None:
    main = f.api.main if f.api else None
    if main is None or main.outcome != MALFORMED_KEY:
        return None
    line = f"Your API key cannot be sent ({main.message}) — this is yours to fix: copy the key again"
    return Side.YOU, line, None


def not_the_api(k: Facts, f: Findings) -> Said | None:
    main = f.api.main if f.api else None
    if main is None or main.outcome != NOT_API:
        return None
    line = (f"Your requests were not answered by the API ({main.endpoint}: HTTP {main.status}, "
            "not the API's answer) — a proxy, captive portal or sign-in page between you and "
            "the service, or a URL that is not the API's: check the URL, then try another "
            "network")
    if k.incident:
        line += f" (the service also reports {k.incident})"
    return Side.YOU, line, "network"


def never_reached(k: Facts, f: Findings) -> Said | None:
    if k.lost is None or k.incident or k.trend:
        return None
    how = "network" if k.lost.outcome == UNREACHABLE else "TLS"
    if k.healthy:
        line = (f"The service is healthy for others; your requests never reached it ({how}) — "
                "this is on your side")
        return Side.YOU, line, "network"
    line = (f"Your requests never reached the service ({how}) and its status could not be "
            "read from here — the service may be down or your network may block it: try from "
            "another network")
    return Side.UNCLEAR, line, "network"


def callers_stage(k: Facts, f: Findings) -> Said | None:
    if not k.mine:
        return None
    x = k.mine[0]
    line = yours(x)
    if k.incident:
        line += f" (the service also reports {k.incident})"
    elif k.trend:
        line += " (and " + k.failing("failed on the service's side") + ")"
    elif k.healthy:
        line = "The service is healthy; " + line
    return Side.YOU, sentence(line), x.stage


def services_side(k: Facts, f: Findings) -> Said | None:
    if not (k.incident or k.trend or k.theirs):
        return None
    parts = []
    if k.trend:
        parts.append(k.failing() + (f" ({k.incident})" if k.incident else ""))
    elif k.incident:
        parts.append(k.incident)
    if k.theirs:
        parts.append(theirs(k.theirs[0]))
    if k.lost is not None:
        parts.append("the doctor's requests got no answer")
    return (Side.SERVICE, sentence("; ".join(parts)) + " — not you",
            k.theirs[0].stage if k.theirs else None)


def callers_traffic(k: Facts, f: Findings) -> Said | None:
    h = k.health
    if h is None or not trend(h, h.caller_failed):
        return None
    line = (f"The service is healthy; {h.pct(h.caller_failed)}% of {h.subject} in the last "
            f"{window(h)} were refused for your account or request "
            f"({breakdown(h, service=False)}) — your limits or requests, not the service")
    return Side.YOU, line, None


def browser(k: Facts, f: Findings) -> Said | None:
    trouble = browser_trouble(f)
    if trouble is None:
        return None
    line = (f"The service is healthy and the doctor's requests succeed; {trouble} — this is on "
            "your side (browser state or network)")
    return Side.YOU, line, None


def nothing_wrong(k: Facts, f: Findings) -> Said | None:
    if not (k.status_fine or k.health is not None or k.main_ok):
        return None
    ours = "your requests succeed" if k.main_ok else "nothing failed"
    return Side.NONE, f"No problem found: the service is healthy and {ours}", None


RULES = (unsendable_key, not_the_api, never_reached, callers_stage, services_side, callers_traffic, browser, nothing_wrong)


def decide(f: Findings, now: datetime) -> Said:
    k = facts(f, now)
    for rule in RULES:
        said = rule(k, f)
        if said is not None:
            return said
    return Side.UNCLEAR, "Could not tell: none of the sources could be read", None


def browser_trouble(f: Findings) -> str | None:
    if f.web is not None and f.web.outcome == "blocked":
        return "your network is refused at the edge on the web path (1020)"
    if f.har is not None and f.har.failing:
        return (f"your browser's requests fail ({len(f.har.failing)} of {f.har.total} in the "
                "HAR)")
    return None


def attribute(f: Findings, now: datetime) -> Attribution:
    side, line, stage = decide(f, now)
    seen, unread = evidence(f, now)
    return Attribution(side, line, stage, seen, unread)
