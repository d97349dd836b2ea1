""""Is it me or them?" (gatehouse/doctor/attribution.py) over recorded inputs: Statuspage
summaries (tests/fixtures/statuspage), health views and request records in the documented shapes
(tests/fixtures/doctor/traffic.json), read by the doctor's own readers — every branch of the
verdict, and what the evidence and "could not read" lines say."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gatehouse.cli.main import app
from gatehouse.doctor import health as health_reader
from gatehouse.doctor import lookup as lookup_reader
from gatehouse.doctor.api import ApiResult, Call
from gatehouse.doctor.attribution import Attribution, Side, attribute
from gatehouse.doctor.evidence import since
from gatehouse.doctor.fetch import Fetched
from gatehouse.doctor.findings import Findings
from gatehouse.doctor.har import read_har
from gatehouse.doctor.health import HealthResult
from gatehouse.doctor.lookup import Lookup
from gatehouse.doctor.markdown import render
from gatehouse.doctor.matrix import decide
from gatehouse.doctor.network import Environment
from gatehouse.doctor.profiles import gatehouse_profile
from gatehouse.doctor.report import build
from gatehouse.doctor.statuspage import StatusResult, read_summary, status_result
from gatehouse.doctor.web import WebResult
from tests.support.statuspage import fixture, recorded

NOW = datetime(2026, 2, 4, 14, 40, tzinfo=UTC)
BASE = "https://gw.example"
STATUS_URL = BASE + "/api/v2/summary.json"
TRAFFIC = json.loads((Path(__file__).parent.parent / "fixtures" / "doctor" / "traffic.json")
                     .read_text())
WANTED = ("API", "llama-3-8b")
HAR = Path(__file__).parent.parent / "fixtures" / "doctor" / "mixed.har"


def health(name: str, model: str | None = None) -> HealthResult:
    path = "/v1/health?window=5m" + (f"&model={model}" if model else "")
    return health_reader.from_fetched(path, model, Fetched(BASE + path, 200, 0.01,
                                                           TRAFFIC["health"][name]))


def health_error(status: int | None, error: str) -> HealthResult:
    return health_reader.from_fetched("/v1/health?window=5m", None,
                                      Fetched(BASE + "/v1/health", status, 0.01, None, error))


def looked(name: str, asked_by: str = "doctor") -> Lookup:
    record = TRAFFIC["records"][name]
    return lookup_reader.from_fetched(record["request_id"], asked_by,
                                      Fetched(BASE, 200, 0.01, record))


def status(doc: Any, wanted: tuple[str, ...] = WANTED) -> StatusResult:
    return read_summary(STATUS_URL, doc, wanted, 0.01)


def status_404() -> StatusResult:
    return status_result(Fetched(STATUS_URL, 404, 0.01, {"error": {"code": "unknown_url"}},
                                 "HTTP 404 unknown_url"), WANTED)


def call(outcome: str = "ok", status: int | None = 200, code: str | None = None,
         rid: str | None = "req_doctor_chat", message: str | None = None) -> Call:
    return Call("POST /v1/chat/completions", outcome, status, 0.02, code=code,
                request_id=rid, message=message)


def api(*calls: Call) -> ApiResult:
    return ApiResult(BASE + "/v1", "gh-abc…wxyz", "llama-3-8b",
                     calls=[Call("GET /v1/models", "ok", 200, 0.01), *calls])


def findings(**kw: Any) -> Findings:
    return Findings(gatehouse_profile(BASE), BASE, Environment({}, []), **kw)


def verdict(**kw: Any) -> Attribution:
    return attribute(findings(**kw), NOW)


# -- never reached -------------------------------------------------------------------------------

def test_never_reached_while_the_status_page_is_fine_is_yours() -> None:
    v = verdict(api=api(call("unreachable", None, rid=None, message="ConnectError: refused")),
                status=status(fixture("operational-summary")))
    assert v.side is Side.YOU and v.stage == "network"
    assert v.line == ("The service is healthy for others; your requests never reached it "
                      "(network) — this is on your side")
    assert any("no answer (unreachable: ConnectError: refused)" in e for e in v.evidence)


def test_never_reached_over_tls_with_nothing_else_readable_is_unclear() -> None:
    v = verdict(api=api(call("tls_error", None, rid=None, message="CERTIFICATE_VERIFY_FAILED")),
                status=status_result(Fetched(STATUS_URL, None, 0.01, None, "ConnectError"),
                                     WANTED),
                traffic_unread="no API key: they are read with your key")
    assert v.side is Side.UNCLEAR
    assert v.line.startswith("Your requests never reached the service (TLS)")
    assert "try from another network" in v.line
    assert f"status API ({STATUS_URL}): ConnectError" in v.unread
    assert any("no API key" in u for u in v.unread)


def test_never_reached_during_an_incident_is_the_service() -> None:
    v = verdict(api=api(call("unreachable", None, rid=None)), status=status(recorded("summary")))
    assert v.side is Side.SERVICE
    assert v.line.endswith("the doctor's requests got no answer — not you")


# -- the caller's side ---------------------------------------------------------------------------

def test_quota_with_a_healthy_service_and_no_status_api() -> None:
    v = verdict(api=api(call("quota_exceeded", 429, "insufficient_quota",
                             rid=TRAFFIC["records"]["quota"]["request_id"])),
                status=status_404(), health=health("quota_spent"), lookups=[looked("quota")])
    assert v.side is Side.YOU and v.stage == "quota"
    assert v.line == ("The service is healthy; your requests failed at the quota stage "
                      "(insufficient_quota) — this is your account's limit")
    assert v.unread == [f"status API ({STATUS_URL}): not published by this service (HTTP 404)"]
    assert any("40 request(s); 12 refused for your account or request (quota ×12)" in e
               for e in v.evidence)
    assert any("429 insufficient_quota at the quota stage" in e for e in v.evidence)


def test_a_bad_key_with_nothing_else_readable_claims_no_health() -> None:
    v = verdict(api=api(call("unauthorized", 401, "invalid_api_key")),
                status=status_404(), health=health_error(401, "HTTP 401 invalid_api_key"))
    assert v.side is Side.YOU and v.stage == "identity"
    assert v.line == ("Your requests failed at the identity stage (invalid_api_key) — the key "
                      "(or session) is yours to fix")
    assert "health (/v1/health?window=5m): HTTP 401 invalid_api_key" in v.unread


def test_quota_during_an_incident_is_still_yours_and_says_both() -> None:
    v = verdict(api=api(call("quota_exceeded", 429, "insufficient_quota")),
                status=status(recorded("summary")))
    assert v.side is Side.YOU
    assert v.line.startswith("Your requests failed at the quota stage (insufficient_quota) — "
                             "this is your account's limit (the service also reports incident")


def test_rate_limited_while_the_service_fails_others() -> None:
    v = verdict(api=api(call()), lookups=[looked("rate", "you")],
                model_health=health("service_failing", "llama-3-8b"))
    assert v.side is Side.YOU and v.stage == "quota"
    assert v.line == ("Your requests failed at the quota stage (rate_limit_exceeded) — you are "
                      "sending faster than your limits allow (and 12.5% of requests to "
                      "llama-3-8b failed on the service's side in the last 5 minutes)")


def test_each_stage_of_the_callers_side_names_itself() -> None:
    edge = verdict(api=api(call("access_denied", 403, "1020", rid=None)),
                   status=status(fixture("operational-summary")))
    assert edge.stage == "edge" and "refused at the edge (1020)" in edge.line
    assert edge.line.startswith("The service is healthy; ")
    invalid = verdict(api=api(call()), lookups=[looked("invalid", "you")])
    assert invalid.stage == "request" and "refused as invalid (model_not_found)" in invalid.line
    gone = verdict(api=api(call()), lookups=[looked("gone", "you")])
    assert gone.stage == "client" and "client went away" in gone.line
    assert all(v.side is Side.YOU for v in (edge, invalid, gone))


def test_the_accounts_refusals_in_the_traffic_while_the_doctor_passes() -> None:
    v = verdict(api=api(call()), health=health("rate_limited"),
                status=status(fixture("operational-summary")))
    assert v.side is Side.YOU and v.stage is None
    assert v.line == ("The service is healthy; 16.7% of your organization's requests in the "
                      "last 5 minutes were refused for your account or request (rate_limited ×9,"
                      " client_error ×1) — your limits or requests, not the service")


def test_the_browser_fails_where_the_doctor_passes() -> None:
    v = verdict(api=api(call()), har=read_har(HAR), health=health("clean"))
    assert v.side is Side.YOU
    assert "your browser's requests fail (3 of 5 in the HAR)" in v.line
    blocked = verdict(api=api(call()), web=WebResult(BASE + "/login", "blocked", 403, 0.01))
    assert blocked.side is Side.YOU and "(1020)" in blocked.line


# -- the service's side --------------------------------------------------------------------------

def test_failing_traffic_and_an_incident_say_not_you_with_the_figures() -> None:
    v = verdict(api=api(call("upstream_unavailable", 503, "upstream_unavailable",
                             rid=TRAFFIC["records"]["upstream"]["request_id"])),
                status=status(recorded("summary")), health=health("org_service_failing"),
                model_health=health("service_failing", "llama-3-8b"),
                lookups=[looked("upstream")])
    assert v.side is Side.SERVICE and v.stage == "upstream"
    assert v.line == (
        '12.5% of requests to llama-3-8b failed in the last 5 minutes (incident "Elevated error '
        'rates on Chat Completions and llama-3-8b" on Chat Completions, Responses, llama-3-8b '
        "since 14:02 UTC (identified)); your requests failed at the upstream stage "
        "(upstream_unavailable) — not you")
    assert any("backends tried: a:ConnectFailed, b:503" in e for e in v.evidence)
    assert any("25 failed on the service's side (server_error ×16, unavailable ×9)" in e
               for e in v.evidence)


def test_a_failure_at_a_service_stage_alone_is_the_service() -> None:
    v = verdict(api=api(call("upstream_unavailable", 503, "upstream_unavailable",
                             rid=TRAFFIC["records"]["upstream"]["request_id"])),
                status=status_404(), health=health_error(None, "no complete answer within 10 s"),
                lookups=[looked("upstream")])
    assert v.side is Side.SERVICE
    assert v.line == "Your requests failed at the upstream stage (upstream_unavailable) — not you"
    store = verdict(api=api(call()), lookups=[looked("quota_store_down", "you")])
    assert store.side is Side.SERVICE and store.stage == "quota"
    assert store.line == "Your requests failed at the quota stage (quota_unavailable) — not you"


def test_at_capacity_is_the_admission_stage() -> None:
    v = verdict(api=api(call("at_capacity", 503, "at_capacity")))
    assert v.side is Side.SERVICE and v.stage == "admission"
    assert "shed at the admission stage (at_capacity): the model is busy" in v.line


def test_no_answer_in_time_counts_against_the_service() -> None:
    v = verdict(api=api(call("timeout", None, rid=None, message="ReadTimeout")))
    assert v.side is Side.SERVICE and "no answer within the timeout" in v.line


def test_an_incident_alone_while_the_doctor_passes() -> None:
    v = verdict(api=api(call()), status=status(recorded("summary")), health=health("clean"))
    assert v.side is Side.SERVICE
    assert v.line.startswith('Incident "Elevated error rates on Chat Completions and '
                             'llama-3-8b"') and v.line.endswith("(identified) — not you")


def test_a_degraded_component_without_an_incident() -> None:
    doc = fixture("minimal-summary")
    doc["incidents"] = []
    v = verdict(api=api(call()), status=status(doc))
    assert v.side is Side.SERVICE
    assert v.line == "API is degraded_performance on the status page — not you"


def test_maintenance_in_progress_on_the_component() -> None:
    doc = recorded("summary")
    doc["incidents"] = []
    v = verdict(api=api(call()), status=status(doc, ("Login",)))
    assert v.side is Side.SERVICE
    assert v.line == ('Maintenance "Sign-in database upgrade" on Login since 14:00 UTC '
                      "(in_progress) — not you")


# -- neither, and nothing to tell ----------------------------------------------------------------

def test_all_is_well() -> None:
    v = verdict(api=api(call()), status=status(fixture("operational-summary")),
                health=health("clean"), model_health=health("empty", "llama-3-8b"))
    assert v.side is Side.NONE
    assert v.line == "No problem found: the service is healthy and your requests succeed"
    assert v.unread == []


def test_one_failure_in_a_hundred_is_not_a_trend() -> None:
    v = verdict(api=api(call()), model_health=health("one_in_a_hundred", "llama-3-8b"))
    assert v.side is Side.NONE


def test_nothing_readable() -> None:
    v = verdict(traffic_unread="no API key: they are read with your key")
    assert v.side is Side.UNCLEAR
    assert v.line == "Could not tell: none of the sources could be read"
    assert v.unread == ["status API: not checked",
                        "health and request lookups: no API key: they are read with your key"]


def test_lookups_not_found_and_unreadable() -> None:
    missing = lookup_reader.from_fetched("req_nope", "you", Fetched(BASE, 404, 0.01, {}, "x"))
    slow = lookup_reader.from_fetched("req_slow", "you",
                                      Fetched(BASE, None, 10, None, "no complete answer within "
                                                                    "10 s"))
    junk = lookup_reader.from_fetched("req_junk", "you", Fetched(BASE, 200, 0.01, ["a list"]))
    v = verdict(api=api(call()), lookups=[missing, slow, junk])
    assert v.side is Side.NONE
    assert any("req_nope (yours): not found in your organization's request log" in e
               for e in v.evidence)
    assert any("req_slow" in u and "no complete answer within 10 s" in u for u in v.unread)
    assert any("req_junk" in u and "not a request record" in u for u in v.unread)


def test_since_is_short_today_and_dated_otherwise() -> None:
    assert since("2026-02-04T14:02:51.462Z", NOW) == "14:02 UTC"
    assert since("2026-02-04T15:02:00+01:00", NOW) == "14:02 UTC"
    assert since("2026-01-28T09:14:03Z", NOW) == "2026-01-28 09:14 UTC"
    assert since("last tuesday", NOW) == "last tuesday" and since(None, NOW) is None


# -- where it is shown ---------------------------------------------------------------------------

def test_the_report_carries_it_and_the_markdown_starts_with_it() -> None:
    f = findings(api=api(call("quota_exceeded", 429, "insufficient_quota")),
                 status=status_404(), health=health("quota_spent"))
    report = build(f, decide(f), NOW)
    who = report["me_or_them"]
    assert set(who) == {"side", "line", "stage", "evidence", "unread"}
    assert who["side"] == "you" and who["stage"] == "quota"
    assert report["checks"]["health"]["org"]["requests"] == 40
    text = render(report)
    first = text.split("\n")[2]
    assert first == f"**Is it me or them?** {who['line']}"
    assert "- Could not read: status API" in text
    assert "### 6. Your traffic (health, request lookups)" in text


@pytest.mark.parametrize("bad", ["", "x" * 513, "req_\u00e9", "req\n1"])
def test_a_bad_request_id_is_refused_before_anything_is_sent(bad: str) -> None:
    result = CliRunner().invoke(app, ["doctor", "http://127.0.0.1:9", "--request-id", bad,
                                      "--no-input"])
    assert result.exit_code == 2 and "--request-id" in result.output


def test_at_most_ten_request_ids() -> None:
    many = [arg for i in range(11) for arg in ("--request-id", f"req_{i}")]
    result = CliRunner().invoke(app, ["doctor", "http://127.0.0.1:9", *many, "--no-input"])
    assert result.exit_code == 2 and "at most 10" in result.output
