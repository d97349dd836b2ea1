"""Statuspage's public v2 JSON: the JSON Schema written from its documentation
(tests/fixtures/statuspage/schema.json), the recorded documents, and a validator.

    from tests.support.statuspage import validate
    validate("summary", response.json())          # raises jsonschema.ValidationError
    validate("incidents/unresolved", document)    # a kind is the path below /api/v2/, no .json

``problems(kind, document)`` lists every failure instead of raising the first;
``doctor_reads(summary, wanted)`` is what ``gatehouse doctor`` makes of a summary (its reader);
``recorded(kind)`` loads the recorded document of a kind, ``routes()`` maps each
``/api/v2/….json`` path to it (for ``tests.support.doctor.serve_json``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from gatehouse.doctor.statuspage import StatusResult, read_summary

HERE = Path(__file__).parent.parent / "fixtures" / "statuspage"
SCHEMA_FILE = HERE / "schema.json"
KINDS = ("summary", "status", "components", "incidents", "incidents/unresolved",
         "scheduled-maintenances", "scheduled-maintenances/upcoming",
         "scheduled-maintenances/active")


def kind_of(kind: str) -> str:
    """``summary``, ``summary.json``, ``/api/v2/summary.json`` → ``summary``."""
    name = kind.removeprefix("/").removeprefix("api/v2/").removesuffix(".json")
    if name not in KINDS:
        raise ValueError(f"unknown Statuspage v2 document {kind!r}: one of {', '.join(KINDS)}")
    return name


@cache
def validator(kind: str) -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    pointer = kind_of(kind).replace("~", "~0").replace("/", "~1")
    return Draft202012Validator({**schema, "$ref": f"#/$defs/{pointer}"})


def problems(kind: str, document: Any) -> list[str]:
    """Every way ``document`` breaks the documented format, as ``path: message``."""
    found = sorted(validator(kind).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in found]


def validate(kind: str, document: Any) -> None:
    """Raise the most telling ``jsonschema.ValidationError`` if ``document`` is not a valid
    Statuspage v2 ``kind`` document."""
    error = best_match(validator(kind).iter_errors(document))
    if error is not None:
        raise error


def recorded(kind: str) -> Any:
    """The recorded document of ``kind``, written from Statuspage's documented examples."""
    return json.loads((HERE / "v2" / f"{kind_of(kind)}.json").read_text())


def fixture(name: str) -> Any:
    """Another recorded document beside the schema (``operational-summary``, ``minimal-summary``)."""
    return json.loads((HERE / f"{name}.json").read_text())


def doctor_reads(summary: Any, wanted: tuple[str, ...] = ("API",)) -> StatusResult:
    """What ``gatehouse doctor`` makes of a summary — the same reader it uses on a live one;
    fails the test if it cannot read it. For the gateway's own ``/api/v2/summary.json``::

        s = doctor_reads(httpx.get(gw.url + "/api/v2/summary.json").json(), ("API", "demo"))
        assert s.degraded == {"demo": "partial_outage"} and s.ours[0].name == "…"
    """
    result = read_summary("summary.json", summary, wanted)
    assert result.fetched, f"the doctor cannot read it: {result.error}"
    assert not result.notes, f"the doctor skipped parts of it: {result.notes}"
    return result


def routes(prefix: str = "/api/v2/") -> dict[str, Any]:
    return {f"{prefix}{kind}.json": recorded(kind) for kind in KINDS}


__all__ = ["KINDS", "ValidationError", "doctor_reads", "fixture", "problems", "recorded", "routes",
           "validate"]
