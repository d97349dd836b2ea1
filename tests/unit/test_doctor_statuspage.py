"""The doctor's Statuspage reader (gatehouse/doctor/statuspage.py) over every documented shape —
the recorded documents, missing optional fields, groups, maintenance, components named
differently — and against hostile answers served on 127.0.0.1: too large (declared, chunked,
compressed), too slow, not JSON, nested too deep, the wrong types. None of them may raise:
each is an "unreadable: why" finding."""

from __future__ import annotations

import copy
import gzip
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.doctor.api import check_api
from gatehouse.doctor.health import HealthResult, read_view
from gatehouse.doctor.lookup import Lookup, read_record
from gatehouse.doctor.statuspage import check_status, matches, read_summary, text
from gatehouse.doctor.web import check_web
from tests.support.doctor import answer, chunked, drip, hostile
from tests.support.statuspage import fixture, recorded

WANTED = ("API", "llama-3-8b")


def test_the_recorded_summary_with_groups_an_incident_and_maintenance() -> None:
    s = read_summary("u", recorded("summary"), WANTED)
    assert s.fetched and s.page == "Example AI" and s.indicator == "major"
    assert s.description == "Partial System Outage"
    # "APIs" is a group: its members matter too; "Models" does not match, its llama-3-8b does
    assert s.watched == ["APIs", "Chat Completions", "Embeddings", "Responses", "llama-3-8b"]
    assert s.degraded == {"Chat Completions": "partial_outage",
                          "Responses": "degraded_performance",
                          "llama-3-8b": "degraded_performance"}
    assert [i.name for i in s.ours] == ["Elevated error rates on Chat Completions and llama-3-8b"]
    incident = s.ours[0]
    assert (incident.status, incident.impact, incident.since) == (
        "identified", "major", "2026-02-04T14:02:00.000Z")
    assert incident.latest_update is not None and incident.latest_update.startswith(
        "We have identified a faulty deployment")
    # the in-progress maintenance is on Login (not ours); the scheduled one is not live
    assert [(i.name, i.maintenance, i.affects_us) for i in s.others] == [
        ("Sign-in database upgrade", True, False)]
    assert s.others[0].since == "2026-02-04T14:00:00.000Z" and s.notes == []


def test_the_documented_minimal_shape_and_an_all_clear_page() -> None:
    s = read_summary("u", fixture("minimal-summary"), WANTED)
    assert s.watched == ["API"] and s.degraded == {"API": "degraded_performance"}
    # the incident names no component: it may be ours
    assert [(i.name, i.affects_us) for i in s.ours] == [("Slow responses", None)]
    clear = read_summary("u", fixture("operational-summary"), WANTED)
    assert not clear.trouble and clear.indicator == "none" and not clear.incidents


def test_missing_optional_fields() -> None:
    bare = {"components": [{"id": "c1", "name": "API", "status": "major_outage"}],
            "incidents": [{"name": "Down", "status": "investigating"}]}
    s = read_summary("u", bare, WANTED)
    assert s.fetched and s.page is None and s.indicator is None
    assert s.degraded == {"API": "major_outage"}
    i = s.ours[0]
    assert (i.impact, i.shortlink, i.latest_update, i.since, i.components) == (
        "none", None, None, None, [])
    assert read_summary("u", {"components": []}, WANTED).trouble is False


def test_components_named_from_the_updates_when_the_incident_lists_none() -> None:
    doc = recorded("summary")
    del doc["incidents"][0]["components"]
    s = read_summary("u", doc, WANTED)
    assert s.ours[0].components == ["Responses", "Chat Completions", "llama-3-8b"]
    assert s.ours[0].affects_us is True


def test_a_group_brings_members_listed_only_in_its_components() -> None:
    doc = recorded("components")
    for c in doc["components"]:
        if c["group_id"] == "01jmzp3q6f9s":
            c["group_id"] = None
    s = read_summary("u", {**doc, "incidents": []}, ("APIs",))
    assert s.watched == ["APIs", "Chat Completions", "Embeddings", "Responses"]


def test_components_named_differently() -> None:
    assert matches("OpenAI API", ("API",)) and matches("APIs", ("api",))
    assert matches("Llama 3 8B", ("llama-3-8b",)) and matches("llama_3_8b", ("llama-3-8b",))
    assert matches("Model: llama-3-8b", ("llama-3-8b",))
    assert not matches("Rapid Deploy", ("API",)) and not matches("Website", ("API",))


def test_maintenance_in_progress_on_our_component() -> None:
    s = read_summary("u", recorded("summary"), ("Login",))
    assert [(i.name, i.status, i.impact) for i in s.ours] == [
        ("Sign-in database upgrade", "in_progress", "maintenance")]
    assert s.degraded == {}  # under_maintenance is not degraded: the maintenance says it


@pytest.mark.parametrize(("summary", "why"), [
    ([], "a list, not an object"),
    ("All Systems Operational", "a string, not an object"),
    (None, "null, not an object"),
    ({"page": {}}, "no components"),
    ({"components": {"id": "c1"}}, "components is an object, not a list"),
    ({"components": [], "incidents": "none"}, "incidents is a string, not a list"),
    ({"components": [], "scheduled_maintenances": 3}, "scheduled_maintenances is a number"),
    ({"components": [], "status": "ok"}, "status is a string, not an object"),
    ({"components": [], "page": ["x"]}, "page is a list, not an object"),
])
def test_the_wrong_shape_is_unreadable_with_why(summary: Any, why: str) -> None:
    s = read_summary("u", summary, WANTED)
    assert not s.fetched and s.error is not None and why in s.error
    assert "Statuspage v2 summary" in s.error and not s.trouble


def test_wrong_types_inside_are_skipped_and_counted() -> None:
    doc = copy.deepcopy(fixture("minimal-summary"))
    doc["components"] += ["API", 7, None, {"id": 1, "name": "API"}, {"name": ["API"]}]
    doc["incidents"] += ["an incident", {"name": {"x": 1}, "status": 5, "impact": [],
                                         "incident_updates": "none", "components": "API"}]
    doc["components"][0]["status"] = {"nested": True}
    doc["components"][0]["group_id"] = ["g"]
    s = read_summary("u", doc, WANTED)
    assert s.fetched and s.degraded == {"API": "unknown"}
    assert s.notes == ["ignored 5 component(s) without an id and a name",
                       "ignored 1 incident(s) or maintenance(s) that were not objects"]
    odd = s.incidents[-1]
    assert (odd.name, odd.status, odd.impact, odd.components) == (
        "(unnamed)", "unknown", "none", [])


def test_text_from_the_page_is_bounded_and_cannot_drive_the_terminal() -> None:
    assert text("Elevated\x1b[2J\x1b]0;pwned\x07 errors\r\n") == "Elevated [2J ]0;pwned errors"
    assert text("x" * 10_000) == "x" * 300 + "…"
    assert text(42) is None and text("  ") is None
    doc = fixture("minimal-summary")
    doc["incidents"][0]["name"] = "\x1b[31mRED\x1b[0m" + "!" * 5000
    name = read_summary("u", doc, WANTED).ours[0].name
    assert "\x1b" not in name and len(name) <= 301


def test_a_huge_component_list_is_read_up_to_its_cap() -> None:
    many = [{"id": f"c{i}", "name": f"Component {i}", "status": "operational"}
            for i in range(12_000)]
    s = read_summary("u", {"components": many, "incidents": []}, WANTED)
    assert s.fetched and "read the first 5000 components only" in s.notes


# -- hostile servers -------------------------------------------------------------------------------

MiB = 1024 * 1024
NESTED = b"[" * 100_000 + b"]" * 100_000
BOMB = gzip.compress(b'{"components": [' + b" " * (8 * MiB) + b"]}")


async def test_hostile_answers_are_unreadable_findings() -> None:
    routes = {
        "/ok": answer(__import__("json").dumps(recorded("summary")).encode()),
        "/huge": answer(b"{" + b" " * (5 * MiB) + b"}"),
        "/lying": answer(b"{}", headers={"content-length": str(50 * MiB)}, length=False),
        "/endless": chunked(b" " * 65536, 200),
        "/bomb": answer(BOMB, headers={"content-encoding": "gzip"}),
        "/slow": drip,
        "/html": answer(b"<html><body>Captive portal: sign in to the Wi-Fi</body></html>"),
        "/nested": answer(NESTED),
        "/missing": answer(b'{"error": {"message": "no", "type": "invalid_request_error", '
                           b'"param": null, "code": "unknown_url"}}', status=404),
        "/broken": answer(b"upstream exploded", status=502),
        "/list": answer(b"[1, 2, 3]"),
    }
    with hostile(routes) as base:
        async with httpx.AsyncClient(timeout=5) as client:
            got = {path: await check_status(client, base + path, WANTED, deadline=1.5)
                   for path in routes}
    assert got["/ok"].fetched and got["/ok"].trouble
    expect = {"/huge": "answer too large", "/lying": "answer too large",
              "/endless": "answer too large (over", "/bomb": "answer too large (over",
              "/slow": "no complete answer within 1.5 s", "/html": "not JSON",
              "/nested": "not JSON", "/missing": "HTTP 404 unknown_url",
              "/broken": "HTTP 502", "/list": "a list, not an object"}
    for path, why in expect.items():
        s = got[path]
        assert not s.fetched and s.error is not None and why in s.error, (path, s.error)
    assert got["/missing"].absent and not got["/broken"].absent
    assert got["/slow"].seconds < 5


async def test_the_api_and_web_probes_are_bounded_too() -> None:
    routes = {"/v1/models": answer(b'{"data": [' + b" " * (5 * MiB) + b"]}"),
              "/v1/chat/completions": drip,
              "/v1/usage": answer(b'{"org": "acme"}', headers={"x-request-id": "req_u"}),
              "/login": chunked(b" " * 65536, 200)}
    with hostile(routes) as base:
        async with httpx.AsyncClient(timeout=5) as client:
            api = await check_api(client, base + "/v1", "gh-k", "m", deadline=1.5)
            web = await check_web(client, base + "/login", deadline=5)
    listed, chat = api.calls
    assert listed.ok and api.models == []  # read up to the cap: no list, no crash
    assert (chat.outcome, chat.status) == ("timeout", None)
    assert chat.message == "no complete answer within 1.5 s" and chat.seconds < 5
    assert api.account is not None and api.account.org == "acme"
    assert web.outcome == "loads" and web.status == 200


async def test_nothing_listening() -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        s = await check_status(client, "http://127.0.0.1:9/api/v2/summary.json", WANTED)
    assert not s.fetched and s.error is not None and "ConnectError" in s.error
    assert s.http_status is None and not s.absent


# -- any JSON at all -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["components", "incidents", "scheduled_maintenances", "status", "page",
                         "id", "name", "group_id", "group", "affected_components", "code",
                         "incident_updates", "body", "requests", "error_classes", "count",
                         "error_class", "attempts", "ok", "quota"]) | st.text(max_size=5),
        inner, max_size=6),
    max_leaves=40)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_no_json_value_makes_a_reader_raise(value: Any) -> None:
    """Whatever a server answers, the status, health and lookup readers return a finding."""
    read_summary("u", value, WANTED)
    read_summary("u", {"components": value, "incidents": value}, WANTED)
    read_summary("u", {"components": [value, {"id": "a", "name": "API", "group_id": value,
                                              "components": value}],
                       "incidents": [{"components": value, "incident_updates": [
                           {"affected_components": value, "body": value}]}]}, WANTED)
    read_view(HealthResult("p", None, True), value)
    read_view(HealthResult("p", None, True), {"requests": 3, "error_classes": value})
    read_record(Lookup("req_x", "you"), value)
    read_record(Lookup("req_x", "you"), {"error_class": "quota", "status": value,
                                         "attempts": value, "time": value})
