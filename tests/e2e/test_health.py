"""The health views against a real ``gatehouse serve``: ok and error traffic on two models (the
official openai SDK as the client), then — once the rollups are written — ``/admin/v1/health``,
the customer's ``/v1/health`` and ``gatehouse health --json`` count exactly what was sent."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser

from tests.e2e.conftest import keep_local, upstream_cfg
from tests.e2e.test_identity import cli
from tests.support.procs import ADMIN_TIMEOUT, Gateway, Upstream, free_port

pytestmark = pytest.mark.e2e

HELLO: list[Any] = [{"role": "user", "content": "hello"}]


def wait_for(gw: Gateway, headers: dict[str, str], path: str, requests: int,
             timeout: float = 30) -> dict[str, Any]:
    """The health answer once ``requests`` are counted (rollups are written every 10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(gw.url + path, headers=headers, timeout=ADMIN_TIMEOUT)
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        if view["requests"] >= requests or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def test_health_counts_what_was_sent(start_gateway: Callable[..., Gateway], up_a: Upstream,
                                     browser: Browser, tmp_path: Path) -> None:
    gw = start_gateway({
        "identity": {"require_key": True},
        "telemetry": {"access_log": False},
        "upstreams": {"a": upstream_cfg(up_a, breaker_failures=1000),
                      "gone": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]},
                   "n": {"backends": [{"upstream": "gone"}]}},
    })
    admin = {"authorization": f"Bearer {cli(gw.config_path, 'keys', 'create', '--admin').strip()}"}
    keys = {}
    for org in ("acme", "other"):
        cli(gw.config_path, "orgs", "create", org)
        cli(gw.config_path, "projects", "create", f"{org}/app")
        keys[org] = cli(gw.config_path, "keys", "create", f"{org}/app").strip()

    prompt = completion = 0
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["acme"], max_retries=0) as sdk:
        for _ in range(4):
            done = sdk.chat.completions.create(model="m", messages=HELLO)
            assert done.usage is not None
            prompt += done.usage.prompt_tokens
            completion += done.usage.completion_tokens
        up_a.control(status=500, times=2)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                sdk.chat.completions.create(model="m", messages=HELLO)
        for _ in range(3):
            with pytest.raises(openai.APIStatusError) as failed:
                sdk.chat.completions.create(model="n", messages=HELLO)
            assert failed.value.status_code == 503
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["other"], max_retries=0) as sdk:
        sdk.chat.completions.create(model="m", messages=HELLO)  # another org's

    m = wait_for(gw, admin, "/admin/v1/health?model=m&window=5m", 7)
    assert m["requests"] == 7 and m["errors"] == 2
    assert m["error_classes"]["ok"]["count"] == 5
    assert m["error_classes"]["server_error"] == {"count": 2, "share": round(2 / 7, 6)}
    assert m["latency_ms"]["p50"] > 0 and m["ttfb_ms"]["p50"] > 0
    assert sum(p["requests"] for p in m["series"]["points"]) == 7
    n = wait_for(gw, admin, "/admin/v1/health?model=n&window=5m", 3)
    assert n["requests"] == 3 and n["errors"] == 3 and n["error_classes"]["unavailable"][
        "count"] == 3 and n["tokens"]["total"] == 0
    acme = wait_for(gw, admin, "/admin/v1/health?org=acme&component=api&window=5m", 9)
    assert acme["requests"] == 9 and acme["errors"] == 5
    assert acme["tokens"]["prompt"] == prompt and acme["tokens"]["completion"] == completion
    assert {x["model"]: (x["requests"], x["errors"]) for x in acme["by_model"]} == {
        "m": (6, 2), "n": (3, 3)}

    # the customer: their own org only; the other org's project is "not found"
    mine = {"authorization": f"Bearer {keys['acme']}"}
    view = wait_for(gw, mine, "/v1/health?window=5m", 9)
    assert (view["requests"], view["errors"]) == (9, 5)
    assert view["tokens"] == acme["tokens"]
    theirs = httpx.get(gw.url + "/v1/health?project=other/app", headers=mine)
    unknown = httpx.get(gw.url + "/v1/health?project=nothing/app", headers=mine)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"].replace("other/app", "…") == \
        unknown.json()["error"]["message"].replace("nothing/app", "…")
    bad = httpx.get(gw.url + "/v1/health?key=key_1", headers=mine)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "key"

    # the CLI reads the same rollups
    printed = json.loads(cli(gw.config_path, "health", "--model", "m", "--window", "5m",
                             "--json"))
    assert {k: printed[k] for k in ("requests", "errors", "error_classes", "tokens")} == {
        k: m[k] for k in ("requests", "errors", "error_classes", "tokens")}
    table = cli(gw.config_path, "health", "--org", "acme", "--window", "15m")
    assert "server_error" in table and "unavailable" in table and "│ n " in table
    the_page_matches(gw, admin, browser, tmp_path)


def the_page_matches(gw: Gateway, admin: dict[str, str], browser: Browser, tmp: Path) -> None:
    """/admin/health in headless Chromium (nothing but the gateway reachable): its numbers and
    bars are the JSON's; the screenshot stays in the test's tmp dir."""
    query = "?org=acme&window=15m"
    page = browser.new_page(extra_http_headers=admin)
    try:
        outside = keep_local(page, gw.url)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        for _ in range(5):  # the same numbers before and after the page: no flush in between
            # and no minute boundary either (the bars' buckets would have moved one along)
            view = httpx.get(gw.url + "/admin/v1/health" + query, headers=admin,
                             timeout=ADMIN_TIMEOUT).json()
            page.goto(gw.url + "/admin/health" + query)
            after = httpx.get(gw.url + "/admin/v1/health" + query, headers=admin,
                              timeout=ADMIN_TIMEOUT).json()
            if (after["requests"], after["series"]) == (view["requests"], view["series"]):
                break
        assert page.inner_text("#requests") == f"{view['requests']:,}"
        assert page.inner_text("#error-rate") == f"{view['error_rate']:.2%}"
        assert "org = acme" in page.inner_text("#filter")
        bars = page.locator("#chart-requests rect.bar")
        assert bars.count() == len(view["series"]["points"]) == 15
        drawn = [float(bars.nth(i).get_attribute("data-value") or 0)
                 for i in range(bars.count())]
        assert drawn == [p["requests"] for p in view["series"]["points"]]
        box = page.locator("#chart-requests").bounding_box()
        assert box is not None and box["height"] > 100
        for cls in ("server_error", "unavailable"):
            row = page.locator(f'#classes tr[data-class="{cls}"] .count')
            assert row.inner_text() == str(view["error_classes"][cls]["count"])
        page.screenshot(path=str(tmp / "health-page.png"), full_page=True)
        assert errors == []  # no CSP violation reported
    finally:
        page.close()
    assert outside == [] and (tmp / "health-page.png").stat().st_size > 0
