"""``gatehouse doctor`` end to end: real gateway processes forced into each branch of the
triage matrix, a Statuspage v2 fixture served on 127.0.0.1, the doctor in its own process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_identity import cli
from tests.support.doctor import incident, run_doctor, serve_json, summary
from tests.support.procs import Gateway, free_port, open_stream

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
TICKET_FIELDS = {"time", "time_zone", "org", "project", "tier", "model", "endpoint",
                 "status_codes", "failing_pct", "failing_basis", "request_ids", "ray_ids",
                 "labels"}
LABELS = {"Reproduced on another network", "Incognito / clean profile tested",
          "HAR + console logs", "Conversation URL or request ID"}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("doctor"), {"identity": {"require_key": True}})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def healthy_key(healthy: Gateway) -> str:
    cli(healthy.config_path, "orgs", "create", "acme")
    cli(healthy.config_path, "projects", "create", "acme/support-bot")
    return cli(healthy.config_path, "keys", "create", "acme/support-bot",
               "--tier", "standard").strip()


def key_for(gw: Gateway, tier: str) -> str:
    cli(gw.config_path, "orgs", "create", "acme")
    cli(gw.config_path, "projects", "create", "acme/bot")
    return cli(gw.config_path, "keys", "create", "acme/bot", "--tier", tier).strip()


def main_call(report: dict[str, Any]) -> dict[str, Any]:
    calls: list[dict[str, Any]] = report["checks"]["api"]["calls"]
    return calls[-1]


def test_all_is_well_and_the_report_has_every_field(
        healthy: Gateway, healthy_key: str, tmp_path: Path) -> None:
    report_md = tmp_path / "report.md"
    with serve_json({"/api/v2/summary.json": summary(incident("Sora is slow", ["c-sora"]))}
                    ) as status:
        run = run_doctor(healthy.url, "--api-key", healthy_key,
                         "--status-url", status + "/api/v2/summary.json",
                         "--har", str(FIXTURES / "mixed.har"),
                         "--tried-private-window", "yes", "--tried-other-network", "no",
                         "--conversation-url", "https://chat.example.com/c/abc123",
                         "--report", str(report_md))
    r = run.report
    assert set(r) == {"schema", "me_or_them", "verdict", "ticket", "target", "checks"}
    assert r["schema"] == "gatehouse-doctor/1"
    assert set(r["verdict"]) == {"branch", "outcome", "exit_code", "headline", "next_step",
                                 "stop_when"}
    assert set(r["checks"]) == {"status", "network", "api", "web", "har", "answers", "health",
                                "lookups"}
    t = r["ticket"]
    assert set(t) == TICKET_FIELDS and set(t["labels"]) == LABELS
    assert (t["org"], t["project"], t["tier"], t["model"]) == (
        "acme", "support-bot", "standard", "demo")
    assert t["endpoint"] == f"POST {healthy.url}/v1/chat/completions"
    assert t["time"][-6] in "+-" and t["time_zone"]
    assert {c["status"] for c in t["status_codes"] if c["source"] == "api"} == {200}
    assert t["failing_pct"] == 60.0  # from the HAR
    assert all(i.startswith("req_") for i in t["request_ids"]) and "req_rate_1" in t["request_ids"]
    assert t["ray_ids"] == ["ray_7f3a9c"]
    assert t["labels"]["Reproduced on another network"] == "no"
    assert t["labels"]["Incognito / clean profile tested"] == "yes"
    assert t["labels"]["HAR + console logs"].startswith("HAR attached")
    assert t["labels"]["Conversation URL or request ID"] == "https://chat.example.com/c/abc123"
    # the HAR shows a 1020 in the browser that the program's own requests do not meet
    assert run.code == 31 and r["verdict"]["branch"] == "network_policy"
    assert "ray_7f3a9c" in r["verdict"]["headline"]
    assert r["checks"]["status"].get("others", True)
    text = report_md.read_text()
    for needle in ["# gatehouse doctor report", "Branch: **network policy**", "Next step:",
                   "Stop when:", "acme", "support-bot", "standard", "demo", "60.0%",
                   "ray_7f3a9c", *LABELS, "### 1. Status page", "Sora is slow",
                   "### 2. Network", "### 3. API path", "### 4. Web path", "### 5. HAR",
                   "net::ERR_CONNECTION_TIMED_OUT"]:
        assert needle in text, needle


def test_fine(healthy: Gateway, healthy_key: str) -> None:
    run = run_doctor(healthy.url, "--api-key", healthy_key)
    assert run.code == 0, run.stderr
    assert run.report["verdict"]["branch"] == "fine"
    assert run.report["checks"]["web"]["outcome"] == "loads"
    assert run.report["checks"]["network"]["hosts"][0]["reachable"]
    # our own status page (issue 14): read, and nothing on it
    assert run.report["checks"]["status"]["fetched"] is True
    assert run.report["checks"]["status"]["indicator"] == "none"


def test_incident_open_on_the_api(healthy: Gateway, healthy_key: str) -> None:
    with serve_json({"/summary.json": summary(incident("Elevated error rates", ["c-api"]),
                                              incident("Sora is slow", ["c-sora"]))}) as status:
        run = run_doctor(healthy.url, "--api-key", healthy_key,
                         "--status-url", status + "/summary.json")
    assert run.code == 10, run.stderr
    v = run.report["verdict"]
    assert v["branch"] == "wait_for_incident"
    assert "Elevated error rates" in v["headline"] and "Sora" not in v["headline"]
    assert "https://stspg.io/" in v["next_step"]
    assert "resolved" in v["stop_when"]


def test_invalid_key(healthy: Gateway) -> None:
    run = run_doctor(healthy.url, "--api-key", "gh-nope-0000000000000000000000000000")
    assert run.code == 30, run.stderr
    call = main_call(run.report)
    assert (call["status"], call["code"], call["outcome"]) == (401, "invalid_api_key",
                                                               "unauthorized")
    assert call["request_id"].startswith("req_")
    assert run.report["verdict"]["branch"] == "api_side"


def test_invalid_key_beats_an_incident(healthy: Gateway) -> None:
    with serve_json({"/s.json": summary(incident("Elevated error rates", ["c-api"]))}) as status:
        run = run_doctor(healthy.url, "--api-key", "gh-nope-0000000000000000000000000000",
                         "--status-url", status + "/s.json")
    assert run.code == 30  # waiting for the incident would not fix a wrong key


def test_quota_spent(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"identity": {"require_key": True},
                        "tiers": {"budget": {"limits": {"tokens_per_day": 60}}}})
    key = key_for(gw, "budget")
    for _ in range(20):  # spend the day's budget
        r = httpx.post(gw.url + "/v1/chat/completions",
                       headers={"authorization": f"Bearer {key}"}, timeout=10,
                       json={"model": "demo", "max_tokens": 8,
                             "messages": [{"role": "user", "content": "hello"}]})
        if r.status_code == 429:
            break
        assert r.status_code == 200, r.text
    else:
        raise AssertionError("the day budget never ran out")
    run = run_doctor(gw.url, "--api-key", key)
    assert run.code == 41, run.stderr
    call = main_call(run.report)
    assert (call["status"], call["code"]) == (429, "insufficient_quota")
    assert run.report["ticket"]["tier"] == "budget"
    assert "retrying will not help" in run.report["verdict"]["next_step"]


def test_rate_limited(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"identity": {"require_key": True},
                        "demo": {"ms_per_token": 50, "reply_tokens": 4000},  # held until closed
                        "tiers": {"single": {"limits": {"concurrent_requests": 1}}}})
    key = key_for(gw, "single")
    held = open_stream(gw, key)  # the one request this key may run
    try:
        run = run_doctor(gw.url, "--api-key", key, "--skip", "web")
    finally:
        held.close()
    assert run.code == 40, run.stderr
    call = main_call(run.report)
    assert (call["status"], call["code"], call["outcome"]) == (429, "rate_limit_exceeded",
                                                               "rate_limited")
    assert call["retry_after"] is not None


def test_at_capacity(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"demo": {"ms_per_token": 50, "reply_tokens": 4000, "max_concurrency": 1},
                        "admission": {"reserved_share": 0,
                                      "classes": {"low": {"queue_timeout": 0.5, "max_queue": 0}}}})
    held = open_stream(gw, "unused")  # open mode: served as the anonymous (low) tier
    try:
        run = run_doctor(gw.url, "--skip", "web")
    finally:
        held.close()
    assert run.code == 51, run.stderr
    call = main_call(run.report)
    assert (call["status"], call["code"]) == (503, "at_capacity")
    assert run.report["verdict"]["branch"] == "api_side"


def test_upstream_down(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({
        "upstreams": {"dead": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}},
        "models": {"m": {"backends": [{"upstream": "dead", "model": "test-model"}]}}})
    run = run_doctor(gw.url, "--model", "m", "--skip", "web")
    assert run.code == 50, run.stderr
    call = main_call(run.report)
    assert (call["status"], call["code"], call["outcome"]) == (
        503, "upstream_unavailable", "upstream_unavailable")
    assert "request id req_" in run.report["verdict"]["headline"]


def test_gateway_not_running() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = run_doctor(url, "--skip", "status")
    assert run.code == 20
    host = run.report["checks"]["network"]["hosts"][0]
    assert host["failed_step"] == "tcp"
    assert run.report["verdict"]["branch"] == "network_policy"


def test_blocked_1020(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"edge": {"rules": [{"action": "deny", "cidr": "127.0.0.1/32",
                                            "path": "^/(v1/|login)", "name": "doctor-e2e"}]}})
    run = run_doctor(gw.url)
    assert run.code == 31, run.stderr
    call = main_call(run.report)
    assert (call["status"], call["code"], call["outcome"]) == (403, "1020", "access_denied")
    assert call["ray_id"] and call["request_id"].startswith("req_")
    assert run.report["checks"]["web"]["outcome"] == "blocked"
    v = run.report["verdict"]
    assert v["branch"] == "network_policy" and call["ray_id"] in v["headline"]
    assert call["ray_id"] in run.report["ticket"]["ray_ids"]
    assert "another network" in v["next_step"]


@pytest.fixture(scope="module")
def challenging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("doctor-challenge"), {
        "edge": {"rules": [{"action": "challenge", "cidr": "127.0.0.1/32", "path": "^/login",
                            "name": "doctor-e2e-check"}]}})
    yield gw
    gw.stop()


def test_a_challenge_on_the_web_path_alone_is_fine(challenging: Gateway) -> None:
    run = run_doctor(challenging.url)
    assert run.code == 0, run.stderr
    web = run.report["checks"]["web"]
    assert web["outcome"] == "challenge" and web["status"] == 403
    assert main_call(run.report)["outcome"] == "ok"  # the API is never challenged
    assert "automatic check" in run.report["verdict"]["headline"]


def test_a_challenge_loop_in_the_browser_is_browser_state(challenging: Gateway) -> None:
    run = run_doctor(challenging.url, "--har", str(FIXTURES / "challenge_loop.har"))
    assert run.code == 32, run.stderr
    v = run.report["verdict"]
    assert v["branch"] == "clean_browser_state"
    assert "2 human checks" in v["headline"] and "private window" in v["next_step"]
    # already tried a private window and another network: support, with the ids
    run = run_doctor(challenging.url, "--har", str(FIXTURES / "challenge_loop.har"),
                     "--tried-private-window", "yes", "--tried-other-network", "yes")
    assert run.code == 32 and "send this report to support" in run.report["verdict"]["next_step"]
    assert {"9f00aa11bb22cc33", "ray_loop2"} <= set(run.report["ticket"]["ray_ids"])
