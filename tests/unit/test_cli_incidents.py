"""``gatehouse incidents …`` in-process on a throwaway SQLite store: open, update, ack,
resolve, the drafted postmortem and its publication, list (table and --json), maintenance,
and every refusal as a message with exit 1."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_cli_accounts import config, run  # noqa: F401  (the fixture)


def test_an_incident_by_hand(config: Path, tmp_path: Path) -> None:  # noqa: F811
    out = run(config, "incidents", "open", "Slow sign-in", "--body", "Looking into it.",
              "--component", "login=degraded_performance")
    assert "opened incident" in out and "impact minor" in out
    iid = out.split("incident ")[1].split(":")[0]
    assert "identified" in run(config, "incidents", "update", iid, "-b", "Found it.",
                               "--status", "identified")
    assert "acknowledged" in run(config, "incidents", "ack", iid)
    [listed] = json.loads(run(config, "incidents", "list", "--json"))
    assert listed["id"] == iid and listed["status"] == "identified"
    assert listed["updates"][-1]["affected_components"][0]["new_status"] == \
        "degraded_performance"
    assert "Slow sign-in" in run(config, "incidents", "list")
    assert "No postmortem yet" in run(config, "incidents", "postmortem", iid)
    assert "postmortem drafted" in run(config, "incidents", "resolve", iid)
    draft = run(config, "incidents", "postmortem", iid)
    assert "Duration:" in draft and "Hit hardest: Login" in draft
    text = tmp_path / "pm.md"
    text.write_text("What happened: a slow password hash.\n")
    assert "published" in run(config, "incidents", "postmortem", iid, "--publish", "--file",
                              str(text))
    shown = run(config, "incidents", "show", iid)
    assert "a slow password hash" in shown and "draft" not in shown
    assert json.loads(run(config, "incidents", "list", "--live", "--json")) == []


def test_refusals(config: Path) -> None:  # noqa: F811
    assert "No incident" in run(config, "incidents", "ack", "abcdefghijkl", code=1)
    assert "No component 'nope'" in run(config, "incidents", "open", "x", "-b", "y",
                                        "--component", "nope=major_outage", code=1)
    assert "Unknown component status" in run(config, "incidents", "open", "x", "-b", "y",
                                             "--component", "api=on_fire", code=1)
    assert "KEY=STATE" in run(config, "incidents", "open", "x", "-b", "y", "--component",
                              "api", code=2)
    assert "status is investigating, identified or monitoring" in run(
        config, "incidents", "open", "x", "-b", "y", "--status", "resolved", code=1)


def test_maintenance(config: Path) -> None:  # noqa: F811
    out = run(config, "incidents", "maintenance", "Upgrade", "-b", "Planned.", "--component",
              "api", "--start", "1h", "--for", "30m")
    assert "scheduled maintenance" in out
    [m] = json.loads(run(config, "incidents", "list", "--maintenance", "--json"))
    assert m["name"] == "Upgrade" and m["status"] == "scheduled"
    assert "No component 'nope'" in run(config, "incidents", "maintenance", "x", "-b", "y",
                                        "--component", "nope", code=1)
