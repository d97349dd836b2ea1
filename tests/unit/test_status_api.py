"""The status page's admin API (/admin/v1/incidents, /maintenances) and public answers
(/status, /api/v2/*.json) in-process: the incident life cycle with affected components,
acknowledgement and a published postmortem; every refusal in the error shape; ETag and 304;
the public JSON's field names as Statuspage's."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from xml.etree import ElementTree

import httpx

from tests.unit.test_admin_api import Admin, admin, error, ok

__all__ = ["admin"]

PAGE_FIELDS = {"id", "name", "url", "time_zone", "updated_at"}
COMPONENT_FIELDS = {"id", "name", "status", "created_at", "updated_at", "position",
                    "description", "showcase", "start_date", "group_id", "page_id", "group",
                    "only_show_if_degraded"}
INCIDENT_FIELDS = {"id", "name", "status", "created_at", "updated_at", "monitoring_at",
                   "resolved_at", "impact", "shortlink", "started_at", "page_id",
                   "incident_updates", "components"}
UPDATE_FIELDS = {"id", "status", "body", "incident_id", "created_at", "updated_at",
                 "display_at", "affected_components", "deliver_notifications", "custom_tweet",
                 "tweet_id"}


async def public(client: httpx.AsyncClient, path: str) -> httpx.Response:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response


async def test_an_incident_from_open_to_postmortem(admin: Admin) -> None:
    made = ok(await admin.post("/incidents", {
        "name": "Login failures", "body": "We are looking into failed sign-ins.",
        "components": {"login": "partial_outage"}}), 201)
    iid = made["id"]
    assert made["impact"] == "major" and made["status"] == "investigating"
    assert not made["automatic"]
    assert made["updates"][0]["affected_components"] == [
        {"code": "login", "name": "Login", "old_status": "operational",
         "new_status": "partial_outage"}]

    summary = (await public(admin.client, "/api/v2/summary.json")).json()
    assert set(summary) == {"page", "components", "incidents", "scheduled_maintenances",
                            "status"}
    assert set(summary["page"]) == PAGE_FIELDS
    assert summary["status"] == {"indicator": "major", "description": "Partial System Outage"}
    for c in summary["components"]:
        assert COMPONENT_FIELDS <= set(c)
    assert {c["name"]: c["status"] for c in summary["components"]}["Login"] == "partial_outage"
    [incident] = summary["incidents"]
    assert set(incident) == INCIDENT_FIELDS
    assert set(incident["incident_updates"][0]) == UPDATE_FIELDS
    assert incident["shortlink"].endswith(f"/status#{iid}")

    updated = ok(await admin.post(f"/incidents/{iid}/updates", {
        "body": "A bad deploy; rolling back.", "status": "identified",
        "components": {"login": "degraded_performance"}}), 201)
    assert updated["status"] == "identified" and updated["impact"] == "major"
    assert updated["updates"][0]["affected_components"][0]["old_status"] == "partial_outage"
    ok(await admin.post(f"/incidents/{iid}/ack"))
    error(await admin.post(f"/incidents/{iid}/postmortem", {"body": "x"}), 409, "conflict")
    resolved = ok(await admin.post(f"/incidents/{iid}/resolve", {"body": "Rolled back."}))
    assert resolved["status"] == "resolved" and resolved["acknowledged_at"] is not None
    assert resolved["updates"][0]["affected_components"][0]["new_status"] == "operational"
    assert "Not affected:" in resolved["postmortem"]
    assert resolved["postmortem_published_at"] is None
    error(await admin.post(f"/incidents/{iid}/updates", {"body": "again"}), 409, "conflict")
    published = ok(await admin.post(f"/incidents/{iid}/postmortem", {}))
    assert published["status"] == "postmortem" and published["postmortem_published_at"]

    summary = (await public(admin.client, "/api/v2/summary.json")).json()
    assert summary["incidents"] == [] and summary["status"]["indicator"] == "none"
    listed = (await public(admin.client, "/api/v2/incidents.json")).json()
    assert [i["status"] for i in listed["incidents"]] == ["postmortem"]
    assert (await public(admin.client, "/api/v2/incidents/unresolved.json")).json()[
        "incidents"] == []
    page = (await public(admin.client, "/status")).text
    assert "Login failures" in page and "Postmortem" in page
    assert ok(await admin.get("/incidents"))["data"][0]["id"] == iid
    assert ok(await admin.get("/incidents?live=true"))["data"] == []


async def test_refusals(admin: Admin) -> None:
    error(await admin.post("/incidents", {"name": "x", "body": "y", "colour": "red"}), 400,
          "invalid_value", "colour")
    error(await admin.post("/incidents", {"name": "x", "body": "y",
                                          "components": {"nope": "major_outage"}}),
          400, "invalid_value", "components")
    error(await admin.post("/incidents", {"name": "x", "body": "y",
                                          "components": {"api": "on_fire"}}),
          400, "invalid_value", "components.api")
    error(await admin.post("/incidents", {"name": "x"}), 400, "missing_required_parameter",
          "body")
    error(await admin.post("/incidents", {"name": "x", "body": "y", "status": "resolved"}),
          400, "invalid_value", "status")
    error(await admin.get("/incidents/abcdefghijkl"), 404, "not_found", "id")
    error(await admin.get("/incidents/NOT-AN-ID"), 400, "invalid_value", "incident_id")
    error(await admin.post("/incidents/abcdefghijkl/resolve"), 404, "not_found", "id")
    error(await admin.post("/maintenances", {"name": "m", "body": "b", "scheduled_for": 10,
                                             "scheduled_until": 5, "components": ["api"]}),
          400, "invalid_value", "scheduled_until")
    for field in ("scheduled_for", "scheduled_until"):  # past 9999: the page cannot show it
        for far in (253_402_300_800, 10**30):
            body = {"name": "m", "body": "b", "scheduled_for": 10, "scheduled_until": 20,
                    "components": ["api"], field: far}
            error(await admin.post("/maintenances", body), 400, "invalid_value", field)
    error(await admin.client.get("/admin/v1/incidents"), 401, "missing_api_key")


async def test_maintenance_is_listed_and_completed(admin: Admin) -> None:
    now = int(time.time())
    upcoming = ok(await admin.post("/maintenances", {
        "name": "Later", "body": "Planned.", "scheduled_for": now + 3600,
        "scheduled_until": now + 7200, "components": ["web"]}), 201)
    live = ok(await admin.post("/maintenances", {
        "name": "Now", "body": "Upgrading.", "scheduled_for": now - 60,
        "scheduled_until": now + 3600, "components": ["api"]}), 201)
    assert (upcoming["status"], live["status"]) == ("scheduled", "in_progress")
    docs = {p: (await public(admin.client, f"/api/v2/scheduled-maintenances{p}.json")).json()
            for p in ("", "/upcoming", "/active")}
    assert [m["name"] for m in docs["/upcoming"]["scheduled_maintenances"]] == ["Later"]
    assert [m["name"] for m in docs["/active"]["scheduled_maintenances"]] == ["Now"]
    assert {m["name"] for m in docs[""]["scheduled_maintenances"]} == {"Later", "Now"}
    active = docs["/active"]["scheduled_maintenances"][0]
    assert active["impact"] == "maintenance" and active["scheduled_for"]
    status = (await public(admin.client, "/api/v2/status.json")).json()
    assert status["status"] == {"indicator": "maintenance",
                                "description": "Service Under Maintenance"}
    done = ok(await admin.post(f"/maintenances/{live['id']}/updates",
                               {"body": "Finished.", "status": "completed"}), 201)
    assert done["status"] == "completed"
    error(await admin.post(f"/maintenances/{live['id']}/updates", {"body": "x"}), 409,
          "conflict")
    assert [m["name"] for m in ok(await admin.get("/maintenances"))["data"]] == ["Now", "Later"]


async def test_public_answers_are_cacheable(admin: Admin) -> None:
    for path in ("/status", "/api/v2/summary.json", "/api/v2/components.json"):
        first = await public(admin.client, path)
        tag = first.headers["etag"]
        assert first.headers["cache-control"] == "public, max-age=5"
        again = await admin.client.get(path, headers={"if-none-match": f'W/{tag}, "other"'})
        assert again.status_code == 304 and again.content == b""
    page = await public(admin.client, "/status")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    json_ = await public(admin.client, "/api/v2/status.json")
    assert json_.headers["access-control-allow-origin"] == "*"
    assert (await admin.client.post("/api/v2/status.json")).status_code == 405


async def test_the_history_feeds(admin: Admin) -> None:
    made = ok(await admin.post("/incidents", {"name": "Errors <on> & \"off\" (it's back)",
                                              "body": "Looking into it."}), 201)
    ok(await admin.post(f"/incidents/{made['id']}/resolve", {"body": "Fixed."}))
    atom = await public(admin.client, "/status/history.atom")
    assert atom.headers["content-type"].startswith("application/atom+xml")
    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = ElementTree.fromstring(atom.content)
    [entry] = feed.findall("a:entry", ns)
    assert entry.findtext("a:title", namespaces=ns) == "Errors <on> & \"off\" (it's back)"
    content = entry.findtext("a:content", namespaces=ns) or ""
    assert "Fixed." in content and "Looking into it." in content
    link = entry.find("a:link", ns)
    assert link is not None and link.get("href", "").endswith(f"/status#{made['id']}")
    rss = ElementTree.fromstring((await public(admin.client, "/status/history.rss")).content)
    [item] = rss.findall("channel/item")
    assert item.findtext("title") == "Errors <on> & \"off\" (it's back)"
    assert item.findtext("pubDate", "").endswith("+0000")
    page = (await public(admin.client, "/status")).text
    assert 'href="/status/history.atom"' in page


async def test_error_pages_of_the_service_link_to_the_status_page(
        gateway_client: Callable[..., Awaitable[httpx.AsyncClient]]) -> None:
    client = await gateway_client(demo={"failure_rate": 1.0})
    page = await client.post("/v1/chat/completions", headers={"accept": "text/html"},
                             json={"model": "demo", "messages": [{"role": "user",
                                                                  "content": "hi"}]})
    assert page.status_code >= 500 and page.headers["content-type"].startswith("text/html")
    assert '<a href="/status">status page</a>' in page.text
    mine = await client.post("/v1/chat/completions", headers={"accept": "text/html"},
                             json={"model": "nope", "messages": []})
    assert mine.status_code < 500 and 'href="/status"' not in mine.text
