"""The JSON Schema of Statuspage's public v2 format (tests/support/statuspage.py): every recorded
document passes, and each documented rule — required fields, types, the enums — fails a
document that breaks it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.statuspage import (
    KINDS,
    ValidationError,
    doctor_reads,
    fixture,
    problems,
    recorded,
    validate,
)


@pytest.mark.parametrize("kind", KINDS)
def test_every_recorded_document_is_valid(kind: str) -> None:
    validate(kind, recorded(kind))
    validate(f"/api/v2/{kind}.json", recorded(kind))  # a path names the kind too


def test_the_other_recorded_summaries_are_valid() -> None:
    for name in ("operational-summary", "minimal-summary"):
        assert problems("summary", fixture(name)) == []


def test_the_recorded_summary_has_what_a_reader_meets() -> None:
    s = recorded("summary")
    groups = [c for c in s["components"] if c["group"]]
    assert groups and all(c["components"] for c in groups)
    assert {c["status"] for c in s["components"]} == {
        "operational", "degraded_performance", "partial_outage", "under_maintenance"}
    assert len(s["incidents"][0]["incident_updates"]) == 2
    assert [m["status"] for m in s["scheduled_maintenances"]] == ["in_progress", "scheduled"]
    assert {i["status"] for i in recorded("incidents")["incidents"]} == {
        "identified", "resolved", "postmortem"}


def test_unknown_fields_are_allowed() -> None:
    s = recorded("summary")
    s["brand_new_field"] = {"anything": 1}
    s["components"][0]["automation_email"] = "x@example.com"
    validate("summary", s)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Statuspage v2 document"):
        validate("history", {})


Edit = Callable[[dict[str, Any]], None]


def setter(path: str, value: Any) -> Edit:
    """``components.1.status`` = value."""
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return edit


def deleter(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]
    return edit


BROKEN: list[tuple[str, str, Edit, str]] = [
    # the enums
    ("summary", "indicator", setter("status.indicator", "green"), "'green' is not one of"),
    ("status", "indicator", setter("status.indicator", "degraded"), "is not one of"),
    ("summary", "component status", setter("components.1.status", "degraded"), "is not one of"),
    ("components", "component status", setter("components.0.status", "down"), "is not one of"),
    ("summary", "impact", setter("incidents.0.impact", "severe"), "is not one of"),
    ("incidents", "incident status", setter("incidents.0.status", "closed"), "is not one of"),
    ("incidents", "update status", setter("incidents.2.incident_updates.0.status", "done"),
     "is not one of"),
    ("scheduled-maintenances", "maintenance status",
     setter("scheduled_maintenances.2.status", "finished"), "is not one of"),
    ("summary", "affected component status",
     setter("incidents.0.incident_updates.0.affected_components.0.new_status", "broken"),
     "is not one of"),
    # which incidents and maintenances a document may hold
    ("incidents/unresolved", "a resolved incident", setter("incidents.0.status", "resolved"),
     "is not one of"),
    ("summary", "a postmortem among the unresolved", setter("incidents.0.status", "postmortem"),
     "is not one of"),
    ("scheduled-maintenances/upcoming", "an in-progress maintenance",
     setter("scheduled_maintenances.0.status", "in_progress"), "was expected"),
    ("scheduled-maintenances/active", "a completed maintenance",
     setter("scheduled_maintenances.0.status", "completed"), "is not one of"),
    ("summary", "a completed maintenance", setter("scheduled_maintenances.0.status", "completed"),
     "is not one of"),
    # required fields
    ("summary", "no page", deleter("page"), "'page' is a required property"),
    ("summary", "no status", deleter("status"), "'status' is a required property"),
    ("summary", "no scheduled_maintenances", deleter("scheduled_maintenances"), "required"),
    ("status", "no description", deleter("status.description"), "'description' is a required"),
    ("status", "no page id", deleter("page.id"), "'id' is a required property"),
    ("components", "no group flag", deleter("components.3.group"), "'group' is a required"),
    ("components", "no position", deleter("components.0.position"), "'position' is a required"),
    ("incidents", "no updates", deleter("incidents.1.incident_updates"),
     "'incident_updates' is a required"),
    ("incidents", "no shortlink", deleter("incidents.0.shortlink"), "'shortlink' is a required"),
    ("incidents", "an update without body", deleter("incidents.0.incident_updates.1.body"),
     "'body' is a required"),
    ("scheduled-maintenances", "no scheduled_for", deleter("scheduled_maintenances.0.scheduled_for"),
     "'scheduled_for' is a required"),
    # types and formats
    ("components", "position as text", setter("components.0.position", "1"), "is not of type"),
    ("components", "group as text", setter("components.0.group", "false"), "is not of type"),
    ("summary", "components as an object", setter("components", {}), "is not of type 'array'"),
    ("incidents", "a date that is not ISO 8601", setter("incidents.0.created_at", "yesterday"),
     "does not match"),
    ("incidents", "a resolved_at that is not ISO 8601", setter("incidents.1.resolved_at", "soon"),
     "does not match"),
    ("status", "a page url that is not one", setter("page.url", "status.example.com"),
     "does not match"),
    ("summary", "a null name", setter("incidents.0.name", None), "is not of type"),
]


@pytest.mark.parametrize(("kind", "what", "edit", "message"), BROKEN,
                         ids=[f"{k}: {w}" for k, w, _, _ in BROKEN])
def test_a_broken_document_fails(kind: str, what: str, edit: Edit, message: str) -> None:
    doc = copy.deepcopy(recorded(kind))
    edit(doc)
    found = problems(kind, doc)
    assert found, f"{what}: accepted"
    assert any(message in p for p in found), found
    with pytest.raises(ValidationError):
        validate(kind, doc)


def test_not_an_object_fails() -> None:
    for junk in ([], "All Systems Operational", None, 3):
        assert problems("summary", junk)


def test_the_doctor_reads_every_recorded_summary() -> None:
    s = doctor_reads(recorded("summary"), ("API", "llama-3-8b"))
    assert s.trouble and s.ours and s.degraded
    assert not doctor_reads(fixture("operational-summary")).trouble
    with pytest.raises(AssertionError, match="cannot read it: no components"):
        doctor_reads({"page": {}})
