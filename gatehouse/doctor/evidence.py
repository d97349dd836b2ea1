"""The evidence behind "is it me or them?" (attribution.py), in words: one line per source the
doctor read — the status API, the caller's traffic, each request looked up, its own call — and
one per source it could not read, with the reason."""

from __future__ import annotations

from datetime import UTC, datetime

from gatehouse.doctor.api import MALFORMED_KEY, NOT_API
from gatehouse.doctor.findings import Findings
from gatehouse.doctor.health import SERVICE_CLASSES, HealthResult
from gatehouse.doctor.lookup import Lookup
from gatehouse.doctor.statuspage import Incident, StatusResult

WINDOWS = {"5m": "5 minutes", "15m": "15 minutes", "1h": "hour"}


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


def incident_text(s: StatusResult, now: datetime) -> str:
    if s.ours:
        i: Incident = s.ours[0]
        when = since(i.since, now)
        kind = "maintenance" if i.maintenance else "incident"
        on = f" on {', '.join(i.components[:3])}" if i.components else ""
        return f'{kind} "{i.name}"{on}' + (f" since {when}" if when else "") + f" ({i.status})"
    return "; ".join(f"{name} is {state} on the status page" for name, state in
                     list(s.degraded.items())[:3])


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
        unread.append(f"status API ({s.url}): {s.error}")
    else:
        state = s.description or s.indicator or "no overall status"
        watching = ", ".join(s.watched[:5]) or "no component matched"
        seen.append(f"Status API: {state} (watching {watching})"
                    + (f"; {incident_text(s, now)}" if s.trouble else "; nothing open there"))
    for h in (f.health, f.model_health):
        if h is None:
            continue
        if not h.fetched:
            unread.append(f"health ({h.path}): {h.error}")
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
        unread.append(f"health and request lookups: {f.traffic_unread}")
    for x in f.lookups:
        seen_or_not = lookup_line(x)
        (seen if x.found or x.http_status == 404 else unread).append(seen_or_not)
    main = f.api.main if f.api else None
    if main is not None:
        answer = (f"not the API's answer: {main.message}" if main.outcome == NOT_API
                  else f"{main.status} {main.code or main.outcome}" if main.status is not None
                  else (main.message or "") if main.outcome == MALFORMED_KEY
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
    return f"lookup of {x.request_id} ({who}): {x.error}"
