""""Is it me or them?" end to end: a real gateway process, the official openai SDK spending a
key's quota or meeting a failing test upstream, then ``gatehouse doctor`` in its own process
reading the caller's ``/v1/health`` and looking its failed request ids up. The status API is a
small local server with the recorded Statuspage documents (the gateway's own arrives with the
status page; until then the doctor says it is not published and carries on)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import upstream_cfg
from tests.e2e.test_identity import cli
from tests.support.doctor import run_doctor, serve_json
from tests.support.procs import Gateway, Upstream, free_port
from tests.support.statuspage import fixture, routes

pytestmark = pytest.mark.e2e

HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, up_a: Upstream) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("doctor-verdict"), {
        "identity": {"require_key": True},
        "telemetry": {"access_log": False},
        "tiers": {"budget": {"limits": {"tokens_per_day": 60}}},
        "upstreams": {"a": upstream_cfg(up_a)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]}},
    }, start_timeout=180)  # the machine may be busy: a slow start is not what this tests
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> dict[str, str]:
    return {"authorization": f"Bearer {cli(gw.config_path, 'keys', 'create', '--admin').strip()}"}


def key_in_new_org(gw: Gateway, admin: dict[str, str], org: str, tier: str = "standard") -> str:
    """Through the admin API: one CLI process per key would cost seconds on a busy machine."""
    for path, body in (("orgs", {"name": org}), ("projects", {"project": f"{org}/app"}),
                       ("keys", {"project": f"{org}/app", "tier": tier})):
        r = httpx.post(f"{gw.url}/admin/v1/{path}", headers=admin, json=body, timeout=30)
        assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def me_or_them(run: Any) -> dict[str, Any]:
    who: dict[str, Any] = run.report["me_or_them"]
    return who


def own_status_api(who: dict[str, Any], gw: Gateway) -> None:
    """The gateway's own /api/v2/summary.json: absent (404) until the status page lands."""
    url = f"{gw.url}/api/v2/summary.json"
    absent = f"status API ({url}): not published by this service (HTTP 404)"
    assert absent in who["unread"] or any(e.startswith("Status API:") for e in who["evidence"])


def test_a_spent_quota_is_yours(gw: Gateway, admin: dict[str, str], tmp_path: Path) -> None:
    key = key_in_new_org(gw, admin, "spender", "budget")
    failed: list[str] = []
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as sdk:
        for _ in range(20):  # spend the day's budget
            try:
                sdk.chat.completions.create(model="demo", messages=HELLO, max_tokens=8)
            except openai.RateLimitError as exc:
                assert exc.code == "insufficient_quota"
                failed.append(exc.response.headers["x-request-id"])
                break
    assert failed, "the day budget never ran out"
    report_md = tmp_path / "report.md"
    run = run_doctor(gw.url, "--api-key", key, "--model", "demo", "--skip", "web",
                     "--request-id", failed[0], "--request-id", "req_not_in_this_log",
                     "--report", str(report_md))
    assert run.code == 41, run.stderr  # the matrix's branch is unchanged
    who = me_or_them(run)
    assert who["side"] == "you" and who["stage"] == "quota"
    # "The service is healthy; " leads once the org's rollups (written every 10 s) are in
    assert who["line"].lower().endswith("your requests failed at the quota stage "
                                        "(insufficient_quota) — this is your account's limit"), who
    own_status_api(who, gw)
    lookups = {x["request_id"]: x for x in run.report["checks"]["lookups"]}
    mine = lookups[failed[0]]
    assert (mine["asked_by"], mine["found"], mine["status"], mine["error_class"],
            mine["stage"], mine["quota"]) == ("you", True, 429, "quota", "quota",
                                              "insufficient_quota")
    assert lookups["req_not_in_this_log"]["found"] is False
    assert lookups["req_not_in_this_log"]["http_status"] == 404
    doctors = [x for x in lookups.values() if x["asked_by"] == "doctor"]
    assert doctors and all(x["stage"] == "quota" for x in doctors)
    assert failed[0] in run.report["ticket"]["request_ids"]
    # first in the terminal output and in the report
    assert run.stderr.index("Is it me or them?") < run.stderr.index("Branch:")
    assert "your requests failed at the quota stage" in run.stderr.lower()
    lines = report_md.read_text().splitlines()
    assert lines[2] == f"**Is it me or them?** {who['line']}"
    assert any("not found in your organization's request log" in line for line in lines)


def wait_for_failures(gw: Gateway, key: str, model: str, failed: int,
                      timeout: float = 30) -> dict[str, Any]:
    """The health view once ``failed`` service-side failures are counted (rollups are
    written every 10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{gw.url}/v1/health?window=5m&model={model}",
                      headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        if view["errors"] >= failed or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def test_a_failing_upstream_is_the_service_with_the_health_figures(
        gw: Gateway, admin: dict[str, str], up_a: Upstream) -> None:
    key = key_in_new_org(gw, admin, "unlucky")
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as sdk:
        sdk.chat.completions.create(model="m", messages=HELLO)
        up_a.control(status=500)
        for _ in range(5):
            with pytest.raises(openai.APIStatusError) as failed:
                sdk.chat.completions.create(model="m", messages=HELLO)
            assert failed.value.status_code in (500, 503)
    view = wait_for_failures(gw, key, "m", 5)
    assert view["errors"] >= 5, view
    run = run_doctor(gw.url, "--api-key", key, "--model", "m", "--skip", "web")
    assert run.code == 50, run.stderr
    who = me_or_them(run)
    assert who["side"] == "service" and who["stage"] == "upstream", who
    assert re.match(r"^\d+(\.\d+)?% of requests to m failed in the last 5 minutes; your requests "
                    r"failed at the upstream stage \([a-z_]+\) — "
                    r"not you$", who["line"]), who["line"]
    figures = [e for e in who["evidence"] if e.startswith("Your organization's traffic to m")]
    assert figures and "failed on the service's side" in figures[0]
    own_status_api(who, gw)
    doctors = [x for x in run.report["checks"]["lookups"] if x["asked_by"] == "doctor"]
    assert doctors and doctors[0]["found"] and doctors[0]["attempts"]


def test_the_status_api_incident_is_the_service(gw: Gateway, admin: dict[str, str]) -> None:
    key = key_in_new_org(gw, admin, "bystander")
    with serve_json(routes()) as status:
        run = run_doctor(gw.url, "--api-key", key, "--model", "demo", "--skip", "web",
                         "--status-url", status + "/api/v2/summary.json")
    assert run.code == 10, run.stderr
    who = me_or_them(run)
    assert who["side"] == "service"
    assert who["line"].startswith('Incident "Elevated error rates on Chat Completions and '
                                  'llama-3-8b" on Chat Completions'), who["line"]
    assert who["line"].endswith("(identified) — not you")
    assert any(e.startswith("Status API: Partial System Outage (watching APIs, ")
               for e in who["evidence"])
    assert any("The doctor's POST /v1/chat/completions: 200" in e for e in who["evidence"])


def test_all_clear(gw: Gateway, admin: dict[str, str]) -> None:
    key = key_in_new_org(gw, admin, "content")
    with serve_json({"/summary.json": fixture("operational-summary")}) as status:
        run = run_doctor(gw.url, "--api-key", key, "--model", "demo", "--skip", "web",
                         "--status-url", status + "/summary.json")
    assert run.code == 0, run.stderr
    who = me_or_them(run)
    assert (who["side"], who["line"]) == (
        "none", "No problem found: the service is healthy and your requests succeed")
    assert who["unread"] == []


def test_never_reached() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with serve_json({"/summary.json": fixture("operational-summary")}) as status:
        run = run_doctor(down, "--api-key", "gh-none", "--status-url", status + "/summary.json",
                         "--skip", "web", "--skip", "network")
    who = me_or_them(run)
    assert (who["side"], who["stage"]) == ("you", "network")
    assert who["line"] == ("The service is healthy for others; your requests never reached it "
                           "(network) — this is on your side")
    # without a status page to vouch for the service, it cannot tell down from blocked
    run = run_doctor(down, "--api-key", "gh-none", "--skip", "web", "--skip", "network")
    who = me_or_them(run)
    assert who["side"] == "unclear" and "may be down or your network may block it" in who["line"]
    assert any(u.startswith(f"status API ({down}/api/v2/summary.json): ConnectError")
               for u in who["unread"])
    assert ("health and request lookups: the service did not answer the doctor's requests"
            in who["unread"])
