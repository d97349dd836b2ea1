"""Is it me or them? One verdict line with its evidence, from three sources and the doctor's
own requests:

- the status API (``/api/v2/summary.json``): what the service says about itself, for everyone;
- the caller's traffic (``GET /v1/health?window=5m``, and ``&model=M``): how the caller's
  organization's requests fared — failed on the service's side (5xx) or refused for the account
  (auth, quota, rate limit, invalid requests, the firewall);
- where failed requests stopped (``GET /v1/requests/{id}``): the doctor's own failures and the
  ids the user passes; the stage that refused a request says whose problem it is.

First match wins (docs/doctor.md lists every line)::

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
from datetime import UTC, datetime
from enum import StrEnum

from gatehouse.doctor.api import TLS_ERROR, UNREACHABLE, Call
from gatehouse.doctor.findings import Findings
from gatehouse.doctor.health import SERVICE_CLASSES, HealthResult
from gatehouse.doctor.lookup import CLASS_OF_OUTCOME, Lookup, stage_of
from gatehouse.doctor.statuspage import Incident, StatusResult

SERVICE_PCT = 5.0  # a share of failures that is a trend, not one unlucky request …
MIN_FAILED = 2     # … and a count (one failure in three requests is not a trend)
WINDOWS = {"5m": "5 minutes", "15m": "15 minutes", "1h": "hour"}


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


def since(value: str | None, now: datetime) -> str | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    return at.strftime("%H:%M UTC" if at.date() == now.astimezone(UTC).date()
                       else "%Y-%m-%d %H:%M UTC")


def window(h: HealthResult) -> str:
    return WINDOWS.get(h.window, h.window)


def breakdown(h: HealthResult, service: bool) -> str:
    """``server_error ×3, unavailable ×2``: the service's failure classes, or the others."""
    return ", ".join(f"{c} ×{n}" for c, n in sorted(h.failed.items(), key=lambda x: -x[1])
                     if (c in SERVICE_CLASSES) == service)


def read_health(f: Findings) -> HealthResult | None:
    """The narrowest health view that was read: the model's, else the organization's."""
    for h in (f.model_health, f.health):
        if h is not None and h.fetched and h.requests:
            return h
    return None


def trend(h: HealthResult | None, failed: int) -> bool:
    pct = h.pct(failed) if h else None
    return pct is not None and failed >= MIN_FAILED and pct >= SERVICE_PCT


def incident_text(s: StatusResult, now: datetime) -> str:
    if s.ours:
        i: Incident = s.ours[0]
        when = since(i.since, now)
        kind = "maintenance" if i.maintenance else "incident"
        on = f" on {', '.join(i.components[:3])}" if i.components else ""
        return f'{kind} "{i.name}"{on}' + (f" since {when}" if when else "") + f" ({i.status})"
    return "; ".join(f"{name} is {state} on the status page" for name, state in
                     list(s.degraded.items())[:3])


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


def evidence(f: Findings, now: datetime) -> tuple[list[str], list[str]]:
    """(what was read, what could not be)."""
    seen: list[str] = []
    unread: list[str] = []
    s = f.status
    if s is None:
        unread.append("status API: not checked")
    elif s.absent:
        unread.append(f"status API ({s.url}): not published by this service (HTTP 404)")
    elif not s.fetched:
        unread.append(f"status API ({s.url}): could not be read ({s.error})")
    else:
        state = s.description or s.indicator or "no overall status"
        watching = ", ".join(s.watched[:5]) or "no component matched"
        seen.append(f"Status API: {state} (watching {watching})"
                    + (f"; {incident_text(s, now)}" if s.trouble else "; nothing open there"))
    for h in (f.health, f.model_health):
        if h is None:
            continue
        if not h.fetched:
            unread.append(f"health ({h.path}): could not be read ({h.error})")
            continue
        parts = [f"{h.requests} request(s)"]
        if h.service_failed:
            parts.append(f"{h.service_failed} failed on the service's side "
                         f"({breakdown(h, service=True)})")
        if h.caller_failed:
            parts.append(f"{h.caller_failed} refused for your account or request "
                         f"({breakdown(h, service=False)})")
        seen.append(f"Your organization's traffic{' to ' + h.model if h.model else ''}, last "
                    f"{window(h)} ({h.path}): " + "; ".join(parts))
    if f.traffic_unread:
        unread.append(f"health and request lookups: not read ({f.traffic_unread})")
    for x in f.lookups:
        seen_or_not = lookup_line(x)
        (seen if x.found or x.http_status == 404 else unread).append(seen_or_not)
    main = f.api.main if f.api else None
    if main is not None:
        answer = (f"{main.status} {main.code or main.outcome}" if main.status is not None
                  else f"no answer ({main.outcome}: {(main.message or '')[:120]})")
        seen.append(f"The doctor's {main.endpoint}: {answer}"
                    + (f" (request id {main.request_id})" if main.request_id else ""))
    return seen, unread


def lookup_line(x: Lookup) -> str:
    who = "the doctor's" if x.asked_by == "doctor" else "yours"
    if x.found:
        done = ("succeeded" if not x.failed else
                f"{x.status} {x.error_code or x.error_class} at the {x.stage or '?'} stage")
        tried = f"; backends tried: {', '.join(x.attempts)}" if x.attempts else ""
        return f"Request {x.request_id} ({who}, {x.time or 'time unknown'}): {done}{tried}"
    if x.http_status == 404:
        return (f"Request {x.request_id} ({who}): not found in your organization's request log "
                "(refused before a key was read, another organization's, or older than the "
                "log keeps)")
    return f"lookup of {x.request_id} ({who}): could not be read ({x.error})"


def decide(f: Findings, now: datetime) -> tuple[Side, str, str | None]:
    s = f.status
    incident = s is not None and s.fetched and s.trouble
    h = read_health(f)
    service_bad = trend(h, h.service_failed if h else 0)
    fails = failures(f)
    mine = [x for x in fails if not x.service_side]
    their = [x for x in fails if x.service_side]
    lost = unanswered(f)
    status_fine = s is not None and s.fetched and not s.trouble
    healthy = (status_fine or (h is not None and not service_bad)) and not their

    if lost is not None and not incident and not service_bad:
        how = "network" if lost.outcome == UNREACHABLE else "TLS"
        if healthy:
            return (Side.YOU, (f"The service is healthy for others; your requests never reached "
                    f"it ({how}) — this is on your side"), "network")
        return (Side.UNCLEAR, (f"Your requests never reached the service ({how}) and its status "
                "could not be read from here — the service may be down or your network may "
                "block it: try from another network"), "network")
    if mine:
        x = mine[0]
        line = yours(x)
        if incident and s is not None:
            line += f" (the service also reports {incident_text(s, now)})"
        elif service_bad and h is not None:
            line += (f" (and {h.pct(h.service_failed)}% of {h.subject} failed on the service's "
                     f"side in the last {window(h)})")
        elif healthy:
            line = "The service is healthy; " + line
        return Side.YOU, line[0].upper() + line[1:], x.stage
    if incident or service_bad or their:
        parts = []
        if service_bad and h is not None:
            parts.append(f"{h.pct(h.service_failed)}% of {h.subject} failed in the last "
                         f"{window(h)}" + (f" ({incident_text(s, now)})"
                                           if incident and s is not None else ""))
        elif incident and s is not None:
            text = incident_text(s, now)
            parts.append(text[0].upper() + text[1:])
        if their:
            parts.append(theirs(their[0]))
        if lost is not None:
            parts.append("the doctor's requests got no answer")
        line = "; ".join(parts)
        return (Side.SERVICE, line[0].upper() + line[1:] + " — not you",
                their[0].stage if their else None)
    if h is not None and trend(h, h.caller_failed):
        return (Side.YOU, (f"The service is healthy; {h.pct(h.caller_failed)}% of "
                f"{h.subject} in the last {window(h)} were refused for your account or "
                f"request ({breakdown(h, service=False)}) — your limits or requests, not the service"),
                None)
    browser = browser_trouble(f)
    if browser:
        return (Side.YOU, (f"The service is healthy and the doctor's requests succeed; {browser}"
                " — this is on your side (browser state or network)"), None)
    main = f.api.main if f.api else None
    if status_fine or h is not None or (main is not None and main.ok):
        ours = "your requests succeed" if main is not None and main.ok else "nothing failed"
        return Side.NONE, f"No problem found: the service is healthy and {ours}", None
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
