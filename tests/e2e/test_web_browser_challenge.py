"""The human check in a real headless Chromium against a real gateway whose edge challenges
the sign-in page (``[edge] rules``: challenge ``^/login``, 10 bits of work).

Uses the Debian ``chromium`` binary (the ``browser`` fixture in conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    Route,
    expect,
)

from tests.support.procs import Gateway

VERIFY = "/_gatehouse/challenge/verify"
RULE = {"action": "challenge", "path": "^/login", "name": "login-check", "difficulty": 10}
CLEARANCE_TTL = 10  # the steps between a clearance and its reuse fit in it, on a slow machine


def edge(**extra: Any) -> dict[str, Any]:
    return {"edge": {"rules": [RULE], **extra}}


@pytest.fixture
def gw(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(edge())


class Watch:
    """What a browser context asked for: challenge pages served, answers posted."""

    def __init__(self, context: BrowserContext) -> None:
        self.challenges = 0
        self.answers: list[Request] = []
        self.problems: list[str] = []
        context.on("response", self._response)
        context.on("request", self._request)
        context.on("console", self._console)

    def _response(self, response: Any) -> None:
        if response.headers.get("gatehouse-mitigated") == "challenge" \
                and response.request.resource_type == "document" \
                and "/_gatehouse/" not in response.url:
            self.challenges += 1

    def _request(self, request: Request) -> None:
        if request.url.endswith(VERIFY):
            self.answers.append(request)

    def _console(self, message: Any) -> None:
        # a challenge page is a 403 document, which Chromium reports as a failed load
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(message.text)


def signed_in_page_reached(page: Page, gw: Gateway) -> None:
    expect(page.locator("h1")).to_have_text("Sign in")
    assert page.url == gw.url + "/login"


def clearance(context: BrowserContext) -> dict[str, Any]:
    found = [c for c in context.cookies() if c["name"] == "gatehouse_clearance"]
    assert len(found) == 1, found
    return dict(found[0])


def test_pass_keep_and_expire(browser: Browser, start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(edge(clearance_ttl=CLEARANCE_TTL))
    context = browser.new_context()
    watch = Watch(context)
    page = context.new_page()
    first = page.goto(gw.url + "/login")
    assert first is not None and first.status == 403
    assert first.headers["gatehouse-mitigated"] == "challenge"
    signed_in_page_reached(page, gw)  # the script solved it and the browser went on
    assert watch.challenges == 1 and len(watch.answers) == 1
    cookie = clearance(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    assert cookie["path"] == "/"
    assert "gatehouse_clearance" not in page.evaluate("document.cookie")

    # the next visit goes straight through
    response = page.goto(gw.url + "/login")
    assert response is not None and response.status == 200
    signed_in_page_reached(page, gw)
    assert watch.challenges == 1

    # once the clearance has expired the check runs again, and passes again
    time.sleep(CLEARANCE_TTL + 1.2)
    response = page.goto(gw.url + "/login")
    assert response is not None and response.status == 403
    signed_in_page_reached(page, gw)
    assert watch.challenges == 2 and len(watch.answers) == 2
    assert gw.metric("gatehouse_edge_challenges_total", rule="login-check",
                     result="solved") == 2
    assert not watch.problems, watch.problems  # no CSP violations, no script errors
    context.close()


def test_without_web_crypto_the_fallback_solves_it(browser: Browser, gw: Gateway) -> None:
    context = browser.new_context()
    # as on plain http, where crypto.subtle does not exist
    context.add_init_script("Object.defineProperty(Crypto.prototype, 'subtle', "
                            "{get() { return undefined; }});")
    watch = Watch(context)
    page = context.new_page()
    page.goto(gw.url + "/login")
    signed_in_page_reached(page, gw)
    assert watch.challenges == 1 and not watch.problems
    context.close()


def test_forged_and_replayed_cookies_and_a_reused_answer_are_refused(
        browser: Browser, gw: Gateway) -> None:
    honest = browser.new_context()
    watch = Watch(honest)
    page = honest.new_page()
    page.goto(gw.url + "/login")
    signed_in_page_reached(page, gw)
    good = clearance(honest)
    answer = watch.answers[0].post_data
    assert answer and "counter=" in answer

    # a forged cookie (a longer life written in) is refused: the check again
    forger = browser.new_context()
    version, expires, bound, mac = good["value"].split(".")
    forger.add_cookies([{"name": good["name"], "url": gw.url,
                         "value": f"{version}.{int(expires) + 86400}.{bound}.{mac}"}])
    response = forger.new_page().goto(gw.url + "/login")
    assert response is not None and response.status == 403
    assert response.headers["gatehouse-mitigated"] == "challenge"

    # the real cookie replayed by another browser (user agent) is refused too
    other = browser.new_context(user_agent="Mozilla/5.0 SomethingElse/1.0")
    other.add_cookies([{"name": good["name"], "value": good["value"], "url": gw.url}])
    response = other.new_page().goto(gw.url + "/login")
    assert response is not None and response.status == 403

    # the answer posted again: its nonce is used up
    replay = httpx.post(gw.url + VERIFY, content=answer, headers={
        "content-type": "application/x-www-form-urlencoded", "accept": "text/html",
        "user-agent": page.evaluate("navigator.userAgent")})
    assert replay.status_code == 403, replay.text
    assert "already used" in replay.text
    assert replay.headers["gatehouse-mitigated"] == "challenge"
    assert "gatehouse_clearance" not in replay.headers.get("set-cookie", "")
    assert gw.metric("gatehouse_edge_challenges_total", result="failed",
                     reason="replayed") == 1
    assert gw.metric("gatehouse_edge_challenges_total", result="failed",
                     reason="forged_cookie") == 1
    for context in (honest, forger, other):
        context.close()


def test_several_tabs_solving_at_once_all_get_through(browser: Browser, gw: Gateway) -> None:
    tabs = 4
    context = browser.new_context()
    watch = Watch(context)
    held: list[Route] = []
    # hold every answer until all tabs have solved, then let them race to the server
    context.route("**" + VERIFY, lambda route: held.append(route))
    pages = [context.new_page() for _ in range(tabs)]
    for page in pages:
        page.goto(gw.url + "/login", wait_until="commit")
    deadline = time.monotonic() + 20
    while len(held) < tabs:
        assert time.monotonic() < deadline, f"only {len(held)} tabs solved"
        pages[0].wait_for_timeout(20)
    assert watch.challenges == tabs and not [c for c in context.cookies()
                                             if c["name"] == "gatehouse_clearance"]
    for route in held:
        route.continue_()
    for page in pages:
        signed_in_page_reached(page, gw)
    # nobody was asked twice, and nobody saw "cookies are blocked"
    assert watch.challenges == tabs and len(watch.answers) == tabs
    assert gw.metric("gatehouse_edge_challenges_total", result="solved") == tabs
    assert gw.metric("gatehouse_edge_challenges_total", result="failed") == 0
    context.close()


def test_without_javascript_the_page_says_what_is_needed(browser: Browser, gw: Gateway) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    response = page.goto(gw.url + "/login")
    assert response is not None and response.status == 403
    notice = page.locator("#noscript")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("JavaScript is needed for this check")
    expect(notice).to_contain_text("contact support and quote the Ray ID")
    ray = page.locator("#ray-id").inner_text()
    assert len(ray) == 16 and ray in notice.inner_text()
    page.wait_for_timeout(500)
    assert page.url == gw.url + "/login"  # it stays: nothing submits itself
    context.close()


def test_blocked_cookies_get_an_explanation_not_a_loop(browser: Browser, gw: Gateway) -> None:
    context = browser.new_context()
    watch = Watch(context)

    def refuse_cookies(route: Route) -> None:
        # what a browser with cookies blocked for this site does: ignore every Set-Cookie
        # (fetched outside the browser: route.fetch would put them in the context's jar)
        request = route.request
        response = httpx.request(request.method, request.url, headers=request.headers,
                                 content=request.post_data_buffer, follow_redirects=False)
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("set-cookie", "content-length", "content-encoding")}
        route.fulfill(status=response.status_code, headers=headers, body=response.content)

    context.route("**/*", refuse_cookies)
    page = context.new_page()
    page.goto(gw.url + "/login")
    expect(page.locator("h1")).to_have_text("Cookies are blocked for this site")
    expect(page.locator("main")).to_contain_text("Allow cookies for this site")
    page.wait_for_timeout(1000)
    # one check, one answer, then the explanation: no loop
    assert watch.challenges == 1 and len(watch.answers) == 1
    assert gw.metric("gatehouse_edge_challenges_total", result="failed",
                     reason="cookies_blocked") == 1
    context.close()


def test_a_bearer_header_does_not_skip_the_check(browser: Browser,
                                                 start_gateway: Callable[..., Gateway]) -> None:
    """Issue 12: ``Authorization: Bearer x`` on every request of a browser used to skip the
    check on the web pages; each of them is now checked, and only then served."""
    gw = start_gateway({"edge": {"rules": [{"action": "challenge", "name": "web", "difficulty": 10,
                                            "path": "^/(login|account|logout)?$"}]}})
    for path, lands_on in [("/login", "/login"), ("/account", "/login?next=/account"),
                           ("/logout", "/login?next=/account")]:
        context = browser.new_context(extra_http_headers={"authorization": "Bearer x"})
        watch = Watch(context)
        page = context.new_page()
        first = page.goto(gw.url + path)
        assert first is not None and first.status == 403, path
        assert first.headers["gatehouse-mitigated"] == "challenge"
        page.wait_for_url(gw.url + lands_on)
        expect(page.locator("h1")).to_have_text("Sign in")
        assert watch.challenges >= 1 and len(watch.answers) == 1, path
        assert not watch.problems, watch.problems
        context.close()
    assert gw.metric("gatehouse_edge_challenges_total", rule="web", result="solved") == 3
