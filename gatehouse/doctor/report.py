"""The support-ready report: the seeds' ticket fields, the verdict and every check, as JSON (a
stable schema, ``gatehouse-doctor/1``) and as Markdown to paste into a ticket."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from gatehouse.doctor.attribution import attribute
from gatehouse.doctor.findings import Findings
from gatehouse.doctor.matrix import Verdict

SCHEMA = "gatehouse-doctor/1"
LABELS = ("Reproduced on another network", "Incognito / clean profile tested",
          "HAR + console logs", "Conversation URL or request ID")


def yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "not answered"}[value]


def plain(value: Any) -> Any:
    """Dataclasses, datetimes and enums as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def status_codes(f: Findings) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for call in f.api.calls if f.api else []:
        rows.append({"source": "api", "endpoint": call.endpoint, "status": call.status,
                     "outcome": call.outcome, "count": 1})
    if f.web is not None:
        rows.append({"source": "web", "endpoint": f"GET {f.web.url}", "status": f.web.status,
                     "outcome": f.web.outcome, "count": 1})
    if f.har is not None:
        for status, count in f.har.statuses.items():
            rows.append({"source": "har", "endpoint": None, "status": int(status),
                         "outcome": None, "count": count})
    return rows


def failing_pct(f: Findings) -> tuple[float | None, str]:
    """From the HAR when there is one (the user's own traffic), else the doctor's requests."""
    if f.har is not None and f.har.total:
        return f.har.failing_pct, f"{len(f.har.failing)} of {f.har.total} requests in the HAR"
    outcomes = [c.ok for c in (f.api.calls if f.api else [])]
    if f.web is not None:
        outcomes.append(f.web.outcome in ("loads", "challenge"))
    if not outcomes:
        return None, "nothing was requested"
    failed = outcomes.count(False)
    return round(100 * failed / len(outcomes), 1), f"{failed} of {len(outcomes)} doctor requests"


def ids(f: Findings) -> tuple[list[str], list[str]]:
    """Request ids and Ray IDs, the failures' first: those are the ones support looks up."""
    seen: list[tuple[bool, str | None, str | None]] = [
        (c.ok, c.request_id, c.ray_id) for c in (f.api.calls if f.api else [])]
    if f.web is not None:
        seen.append((f.web.outcome == "loads", f.web.request_id, f.web.ray_id))
    seen += [(False, x.request_id, None) for x in f.lookups if x.asked_by == "you"]
    if f.har is not None:
        seen += [(False, r, None) for r in f.har.request_ids]
        seen += [(False, None, r) for r in f.har.ray_ids]
    seen.sort(key=lambda s: s[0])  # stable: failures first, in the order they were seen
    request_ids = [r for _, r, _ in seen if r]
    ray_ids = [r for _, _, r in seen if r]
    return list(dict.fromkeys(request_ids)), list(dict.fromkeys(ray_ids))


def ticket(f: Findings, now: datetime) -> dict[str, Any]:
    account = f.api.account if f.api and f.api.account else None
    main = f.api.main if f.api else None
    pct, basis = failing_pct(f)
    request_ids, ray_ids = ids(f)
    har = ("not attached" if f.har is None else
           f"HAR attached: {f.har.path} ({f.har.total} requests, {f.har.failing_pct}% failing); "
           "console logs: attach them too (the doctor cannot read the browser console)")
    quoted = f.answers.conversation_url or ", ".join(request_ids[:5]) or "none seen"
    return {
        "time": now.isoformat(timespec="seconds"), "time_zone": now.tzname(),
        "org": account.org if account else None,
        "project": account.project if account else None,
        "tier": account.tier if account else None,
        "model": f.api.model if f.api else None,
        "endpoint": _absolute(main.endpoint, f.api.base) if main and f.api else None,
        "status_codes": status_codes(f),
        "failing_pct": pct, "failing_basis": basis,
        "request_ids": request_ids, "ray_ids": ray_ids,
        "labels": {LABELS[0]: yes_no(f.answers.other_network),
                   LABELS[1]: yes_no(f.answers.private_window),
                   LABELS[2]: har, LABELS[3]: quoted},
    }


def _absolute(endpoint: str, base: str) -> str:
    """``POST /v1/chat/completions`` → ``POST https://host/v1/chat/completions``."""
    method, _, path = endpoint.partition(" ")
    url = urlsplit(base)
    return f"{method} {url.scheme}://{url.netloc}{path}"


def build(f: Findings, verdict: Verdict, now: datetime) -> dict[str, Any]:
    """The report as one JSON object; its top-level keys and the ticket's are the schema."""
    env = f.environment
    who = attribute(f, now)
    return {
        "schema": SCHEMA,
        "me_or_them": {"side": who.side.value, "line": who.line, "stage": who.stage,
                       "evidence": who.evidence, "unread": who.unread},
        "verdict": {"branch": verdict.branch.value, "outcome": verdict.outcome,
                    "exit_code": verdict.exit_code, "headline": verdict.headline,
                    "next_step": verdict.next_step, "stop_when": verdict.stop_when},
        "ticket": ticket(f, now),
        "target": {"profile": f.profile.name, "url": f.url, "api_base": f.profile.api_base,
                   "web_url": f.profile.web_url,
                   "status_url": f.status.url if f.status else None},
        "checks": {
            "status": None if f.status is None else {
                **plain(f.status), "live_incident_for_us": f.status.trouble},
            "network": {
                "hosts": [{**plain(h), "reachable": h.reachable, "intercepted": h.intercepted,
                           "tls_verdict": h.chain.explanation if h.chain else None}
                          for h in f.hosts],
                "proxies": env.proxies, "vpn_interfaces": env.vpn_interfaces},
            "api": plain(f.api), "web": plain(f.web),
            "har": None if f.har is None else {**plain(f.har), "failing_pct": f.har.failing_pct},
            "health": {"org": plain(f.health), "model": plain(f.model_health),
                       "unread": f.traffic_unread},
            "lookups": [{**plain(x), "stage": x.stage} for x in f.lookups],
            "answers": plain(f.answers),
        },
    }
