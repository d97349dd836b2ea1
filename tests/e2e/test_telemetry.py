"""Every request recorded once, from a real gateway process: one request of every outcome class
(the openai SDK as the client where it can be), each then looked up by its ids through the
admin API, the customer endpoint (own org only) and ``gatehouse requests show``.

Clients are told apart by ``X-Forwarded-For`` from 127.0.0.1 (a trusted proxy), so the
denied address is this test's own."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import upstream_cfg
from tests.e2e.test_edge import as_, somebody
from tests.e2e.test_identity import cli
from tests.e2e.test_quota import wait_for_window
from tests.support.procs import ADMIN_TIMEOUT, Gateway, Upstream

pytestmark = pytest.mark.e2e

HELLO: list[Any] = [{"role": "user", "content": "hello"}]
NO_QUEUE = {"max_queue": 0, "queue_timeout": 1}


def config(up: Upstream, denied: str) -> dict[str, Any]:
    return {
        "identity": {"require_key": True},
        "telemetry": {"access_log": False},
        "edge": {"trusted_proxies": ["127.0.0.1/32", "::1/128"],
                 "rules": [{"action": "deny", "cidr": denied, "name": "e2e-denied"},
                           {"action": "challenge", "path": "^/account", "name": "pages"}]},
        "upstreams": {"a": upstream_cfg(up, first_byte_timeout=1.0, total_timeout=1.0,
                                        breaker_failures=1000)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]}},
        # one slot and no queue: a second request while a stream holds it is shed at once
        "demo": {"ms_per_token": 50, "reply_tokens": 400, "max_concurrency": 1},
        "admission": {"reserved_share": 0,
                      "classes": {"high": NO_QUEUE, "normal": NO_QUEUE, "low": NO_QUEUE}},
        "tiers": {"rpm1": {"limits": {"requests_per_minute": 1}},
                  "budget": {"limits": {"tokens_per_day": 40}}},
    }


class Lookup:
    def __init__(self, gw: Gateway, admin_key: str) -> None:
        self.gw = gw
        self.admin = {"authorization": f"Bearer {admin_key}"}

    def find(self, any_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The admin API's view of a request (waiting for records still being made)."""
        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(f"{self.gw.url}/admin/v1/requests/{any_id}", headers=self.admin,
                          timeout=ADMIN_TIMEOUT)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found


def key(gw: Gateway, org: str, tier: str = "standard") -> str:
    cli(gw.config_path, "orgs", "create", org)
    cli(gw.config_path, "projects", "create", f"{org}/app")
    return cli(gw.config_path, "keys", "create", f"{org}/app", "--tier", tier).strip()


@dataclass
class Site:
    gw: Gateway
    look: Lookup
    denied: str  # the address the firewall denies
    clients: list[openai.OpenAI] = field(default_factory=list)

    def sdk(self, api_key: str, **headers: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.gw.url + "/v1", api_key=api_key, max_retries=0,
                               default_headers=headers)
        self.clients.append(client)
        return client


@pytest.fixture
def site(start_gateway: Callable[..., Gateway], up_a: Upstream) -> Iterator[Site]:
    denied = somebody()
    gw = start_gateway(config(up_a, denied))
    admin_key = cli(gw.config_path, "keys", "create", "--admin").strip()
    made = Site(gw, Lookup(gw, admin_key), denied)
    yield made
    for client in made.clients:
        client.close()


def test_every_outcome_class_is_recorded_and_found_by_its_ids(site: Site,
                                                              up_a: Upstream) -> None:
    gw, look = site.gw, site.look
    acme = key(gw, "acme")
    client = site.sdk(acme)

    # ok, found by request id and by the client request id the SDK user chose
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=HELLO, extra_headers={"X-Client-Request-Id": "acme-call-1"})
    rid = raw.headers["x-request-id"]
    rec = look.find(rid)
    assert (rec["status"], rec["error_class"], rec["component"], rec["edge"]) == (
        200, "ok", "api", "pass")
    assert rec["quota"] == "unlimited" and rec["admission_wait_ms"] is not None
    assert rec["backend"] == "demo" and rec["upstream_status"] == 200
    assert rec["prompt_tokens"] and rec["completion_tokens"] and rec["ttfb_ms"] is not None
    assert rec["tier"] == "standard" and rec["org"] and rec["key_id"]
    assert look.find("acme-call-1")["request_id"] == rid

    # 4xx client error
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    rec = look.find(nf.value.request_id or "")
    assert (rec["error_class"], rec["error_code"]) == ("client_error", "model_not_found")

    # 401
    with pytest.raises(openai.AuthenticationError) as auth:
        site.sdk("gh-not-a-key").chat.completions.create(model="demo", messages=HELLO)
    rec = look.find(auth.value.request_id or "")
    assert (rec["status"], rec["error_class"], rec["error_code"]) == (401, "auth",
                                                                      "invalid_api_key")

    # 429 rate and 429 quota
    rpm1 = site.sdk(key(gw, "slow", "rpm1"))
    wait_for_window(15)  # both calls in one minute: the second is the one over the limit
    first = rpm1.chat.completions.with_raw_response.create(model="demo", messages=HELLO,
                                                           max_tokens=4)
    assert look.find(first.headers["x-request-id"])["quota"] == "allowed"
    with pytest.raises(openai.RateLimitError) as rate:
        first = rpm1.chat.completions.with_raw_response.create(model="demo", messages=HELLO,
                                                           max_tokens=4)
    assert look.find(first.headers["x-request-id"])["quota"] == "allowed"
    rec = look.find(rate.value.request_id or "")
    assert (rec["error_class"], rec["quota"]) == ("rate_limited", "rate_limit_exceeded")
    budget = site.sdk(key(gw, "thrifty", "budget"))
    with pytest.raises(openai.RateLimitError) as spent:
        for _ in range(10):
            budget.chat.completions.create(model="demo", messages=HELLO, max_tokens=8)
    rec = look.find(spent.value.request_id or "")
    assert (rec["error_class"], rec["quota"]) == ("quota", "insufficient_quota")

    # 500 and 504 from the upstream, with the backend tried and what it did
    up_a.control(status=500, times=1)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="m", messages=HELLO)
    rec = look.find(failed.value.request_id or "")
    assert (rec["status"], rec["error_class"], rec["attempts"]) == (500, "server_error",
                                                                    ["a:500"])
    assert rec["error_cause"]  # operators see the private cause
    up_a.control(first_byte_ms=3000)
    with pytest.raises(openai.APIStatusError) as slow:
        client.chat.completions.create(model="m", messages=HELLO)
    assert slow.value.status_code == 504
    rec = look.find(slow.value.request_id or "")
    assert (rec["error_class"], rec["attempts"]) == ("timeout", ["a:TimedOut"])
    up_a.reset()

    # a stream holds the demo's one slot: the next request is shed (503 at_capacity); then
    # the stream's client goes away mid-answer (client gone)
    with httpx.stream("POST", gw.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {acme}"},
                      json={"model": "demo", "messages": HELLO, "stream": True}) as held:
        streamed_id = held.headers["x-request-id"]
        lines = held.iter_lines()  # held: dropping the iterator would close the stream
        assert next(lines).startswith("data: ")
        with pytest.raises(openai.APIStatusError) as shed:
            client.chat.completions.create(model="demo", messages=HELLO)
        assert shed.value.status_code == 503
    rec = look.find(shed.value.request_id or "")
    assert (rec["status"], rec["error_class"], rec["error_code"]) == (503, "at_capacity",
                                                                      "at_capacity")
    rec = look.find(streamed_id)  # (made when the gateway noticed the client had gone)
    assert (rec["status"], rec["outcome"], rec["error_class"], rec["stream"]) == (
        499, "client_disconnected", "client_gone", True)
    assert rec["ttfb_ms"] is not None and rec["backend"] == "demo"

    # 1020, found by its Ray ID; the challenge page likewise
    denied_at = site.denied
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        site.sdk(acme, **as_(denied_at)).chat.completions.create(model="demo", messages=HELLO)
    ray = blocked.value.response.headers["gatehouse-ray"]
    rec = look.find(ray)
    assert rec["request_id"] == blocked.value.request_id
    assert (rec["error_class"], rec["error_code"], rec["edge"], rec["ray_id"], rec["client"]) \
        == ("blocked", "1020", "deny", ray, denied_at)
    assert rec["org"] is None  # refused before the key was looked at
    page = httpx.get(gw.url + "/account", headers={**as_(somebody()), "accept": "text/html"})
    assert page.status_code == 403 and page.headers["gatehouse-mitigated"] == "challenge"
    rec = look.find(page.headers["gatehouse-ray"])
    assert (rec["component"], rec["error_class"], rec["edge"]) == ("web", "blocked",
                                                                   "challenge")

    # the mounted apps: sign-in page and the admin API
    login = httpx.get(gw.url + "/login")
    rec = look.find(login.headers["x-request-id"])
    assert (rec["component"], rec["status"], rec["error_class"]) == ("login", 200, "ok")
    rec = look.find(look.find(rid)["request_id"])  # (a lookup is itself a request)
    assert rec["request_id"] == rid

    # the counters: written, nothing dropped
    deadline = time.monotonic() + 5
    while gw.metric("gatehouse_request_log_written_total") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert gw.metric("gatehouse_request_log_dropped_total") == 0

    # the CLI reads the store (records reach it within a second or so)
    deadline = time.monotonic() + 10
    while True:
        shown = subprocess.run(
            [sys.executable, "-m", "gatehouse", "requests", "show", ray, "--json",
             "--config", str(gw.config_path)],
            capture_output=True, text=True, timeout=60, check=False)
        if shown.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert blocked.value.request_id in shown.stdout and "e2e-denied" in shown.stdout


def test_an_org_sees_only_its_own_requests(site: Site) -> None:
    gw = site.gw
    a, b = key(gw, "org-a"), key(gw, "org-b")
    mine = site.sdk(a).chat.completions.with_raw_response.create(
        model="demo", messages=HELLO, extra_headers={"X-Client-Request-Id": "same-name"})
    theirs = site.sdk(b).chat.completions.with_raw_response.create(
        model="demo", messages=HELLO, extra_headers={"X-Client-Request-Id": "same-name"})
    as_a = {"authorization": f"Bearer {a}"}

    def customer(any_id: str) -> httpx.Response:
        return httpx.get(f"{gw.url}/v1/requests/{any_id}", headers=as_a)

    r = customer(mine.headers["x-request-id"])
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["request_id"] == mine.headers["x-request-id"] and view["status"] == 200
    assert "error_cause" not in view and "client" not in view
    assert customer("same-name").json()["request_id"] == mine.headers["x-request-id"]
    other, unknown = customer(theirs.headers["x-request-id"]), customer("req_unknown")
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert other.json()["error"]["message"].replace(theirs.headers["x-request-id"], "ID") == \
        unknown.json()["error"]["message"].replace("req_unknown", "ID")
    assert customer("x" * 513).status_code == 400


def test_records_buffered_at_shutdown_are_written(site: Site) -> None:
    gw = site.gw
    raw = site.sdk(key(gw, "acme")).chat.completions.with_raw_response.create(
        model="demo", messages=HELLO, extra_headers={"X-Client-Request-Id": "before-stop"})
    gw.stop()  # the last flush, at shutdown, writes what the buffer holds
    shown = subprocess.run(
        [sys.executable, "-m", "gatehouse", "requests", "show", "before-stop", "--json",
         "--config", str(gw.config_path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert raw.headers["x-request-id"] in shown.stdout
