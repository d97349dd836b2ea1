"""The report (report.build's dict) as Markdown, to paste into a support ticket."""

from __future__ import annotations

from typing import Any

from gatehouse.doctor.statuspage import CONTROL

BRANCHES = {"wait_for_incident": "wait for the incident",
            "clean_browser_state": "clean browser state",
            "network_policy": "network policy", "api_side": "API-side issue",
            "fine": "it's fine"}


def cell(value: Any) -> str:
    """A value as one line of Markdown: no control sequence (a HAR's or a server's text may
    carry ESC) reaches a terminal that shows the report."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, list):
        return ", ".join(f"`{cell(v)}`" for v in value)
    return CONTROL.sub(" ", str(value)).replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def render(report: dict[str, Any]) -> str:
    v, t, checks = report["verdict"], report["ticket"], report["checks"]
    codes = " · ".join(
        f"{r['endpoint'] or 'HAR'} → {r['status'] if r['status'] is not None else r['outcome']}"
        + (f" ×{r['count']}" if r["count"] > 1 else "") for r in t["status_codes"])
    pct = "—" if t["failing_pct"] is None else f"{t['failing_pct']}% ({t['failing_basis']})"
    lines = [
        "# gatehouse doctor report", "",
        *me_or_them(report["me_or_them"]),
        f"**{cell(v['headline'])}**", "",
        f"- Branch: **{BRANCHES[v['branch']]}** (exit code {v['exit_code']}, `{v['outcome']}`)",
        f"- Next step: {cell(v['next_step'])}",
        f"- Stop when: {cell(v['stop_when'])}", "",
        "## Ticket", "",
        *table(["field", "value"], [
            ["Time", f"{t['time']} ({t['time_zone']})"], ["Org", t["org"]],
            ["Project", t["project"]], ["Tier", t["tier"]], ["Model", t["model"]],
            ["Endpoint", t["endpoint"]], ["Status codes", codes],
            ["Failing (approx.)", pct], ["Request IDs", t["request_ids"]],
            ["Ray IDs", t["ray_ids"]],
            *[[label, value] for label, value in t["labels"].items()]]),
        "", "## Checks", "",
    ]
    lines += status_section(checks["status"])
    lines += network_section(checks["network"])
    lines += api_section(checks["api"])
    web = checks["web"]
    lines += ["### 4. Web path", ""]
    lines += (["Not checked.", ""] if web is None else table(
        ["page", "result", "status", "request id", "Ray ID", "detail"],
        [[web["url"], web["outcome"], web["status"], web["request_id"], web["ray_id"],
          web["detail"]]]) + [""])
    lines += har_section(checks["har"])
    lines += traffic_section(checks["health"], checks["lookups"])
    return "\n".join(lines) + "\n"


def me_or_them(who: dict[str, Any]) -> list[str]:
    """The one verdict line, first, with what it rests on and what could not be read."""
    out = [f"**Is it me or them?** {cell(who['line'])}", ""]
    out += [f"- {cell(e)}" for e in who["evidence"]]
    out += [f"- Could not read: {cell(u)}" for u in who["unread"]]
    return out + [""]


def traffic_section(health: dict[str, Any], lookups: list[dict[str, Any]]) -> list[str]:
    out = ["### 6. Your traffic (health, request lookups)", ""]
    if health["unread"]:
        return out + [f"Not read: {cell(health['unread'])}.", ""]
    rows = [[h["path"], h["requests"] if h["fetched"] else "—",
             ", ".join(f"{c} ×{n}" for c, n in h["failed"].items()) if h["fetched"]
             else f"unreadable: {h['error']}"]
            for h in (health["org"], health["model"]) if h is not None]
    out += table(["view", "requests", "failed (by class)"], rows) + [""] if rows else []
    if lookups:
        out += table(["request id", "asked by", "status", "class", "code", "stage", "backends",
                      "note"], [
            [x["request_id"], x["asked_by"], x["status"], x["error_class"], x["error_code"],
             x["stage"], ", ".join(x["attempts"]), x["error"]] for x in lookups]) + [""]
    return out


def status_section(s: dict[str, Any] | None) -> list[str]:
    out = ["### 1. Status page", ""]
    if s is None:
        return out + ["Not checked.", ""]
    if not s["fetched"]:
        return out + [f"{s['url']}: could not be read ({cell(s['error'])}).", ""]
    out += [(f"{s['page'] or s['url']}: {s['description'] or s['indicator']}. Watching: "
            f"{', '.join(s['watched']) or 'no component matched'}.")]
    out += [f"- **{cell(name)}** is {cell(state)}" for name, state in s["degraded"].items()]
    out += [f"- Note: {cell(n)}" for n in s["notes"]]
    if s["incidents"]:
        out += [""] + table(["incident", "status", "impact", "since", "components", "yours?",
                             "link"], [
            [i["name"], i["status"], i["impact"], i["since"], ", ".join(i["components"]),
             {True: "yes", False: "no", None: "maybe"}[i["affects_us"]], i["shortlink"]]
            for i in s["incidents"]])
    else:
        out += ["", "No unresolved incidents."]
    return out + [""]


def network_section(n: dict[str, Any]) -> list[str]:
    out = ["### 2. Network", ""]
    out += table(["host", "addresses", "DNS ms", "TCP ms", "TLS ms", "TLS", "result"], [
        [h["endpoint"]["host"] + f":{h['endpoint']['port']}", h["addresses"], h["dns_ms"],
         h["tcp_ms"], h["tls_ms"], h["tls_version"],
         (f"{h['failed_step']} failed: {h['error']}" if h["failed_step"] else
          (("**intercepted**: " if h["intercepted"] else "ok: ") + (h["tls_verdict"] or "plain TCP")))]
        for h in n["hosts"]]) if n["hosts"] else ["Not checked."]
    proxies = ", ".join(f"{k}={v}" for k, v in n["proxies"].items()) or "none"
    vpn = ", ".join(n["vpn_interfaces"]) or "none seen"
    return out + ["", f"Proxy settings: {proxies}. VPN-like interfaces: {vpn}.", ""]


def api_section(a: dict[str, Any] | None) -> list[str]:
    out = ["### 3. API path", ""]
    if a is None:
        return out + ["Not checked.", ""]
    out += [f"{a['base']} with key {a['key'] or '(none)'}, model {a['model'] or '(none)'}.", ""]
    out += table(["call", "status", "outcome", "code", "request id", "Ray ID", "seconds"], [
        [c["endpoint"], c["status"], c["outcome"], c["code"], c["request_id"], c["ray_id"],
         c["seconds"]] for c in a["calls"]])
    return out + [""]


def har_section(h: dict[str, Any] | None) -> list[str]:
    out = ["### 5. HAR", ""]
    if h is None:
        return out + ["No HAR given (`--har file.har`).", ""]
    out += [(f"{cell(h['path'])}: {h['total']} requests, {len(h['failing'])} failing "
            f"({h['failing_pct']}%), {h['challenges']} challenges, {h['blocked']} blocked (1020); "
            f"median {h['median_ms']} ms."), ""]
    if h["failing"]:
        out += table(["started", "request", "status", "ms", "request id", "Ray ID"], [
            [r["started"], f"{r['method']} {r['url']}", r["status"] or r["error"], r["ms"],
             r["request_id"], r["ray_id"]] for r in h["failing"][:20]])
        out += [""]
    return out
