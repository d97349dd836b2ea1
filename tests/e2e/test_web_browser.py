"""Sign-in, idle expiry and sign-out in a real headless Chromium against a real gateway.

Uses the Debian ``chromium`` binary (not Playwright's own download; the ``browser`` fixture in
conftest.py). A missing browser fails the test: .ci/run installs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable

from playwright.sync_api import Browser, Page, expect

from tests.support.procs import Gateway

EMAIL = "grace@example.com"
PASSWORD = "a long enough password"
IDLE_SECONDS = 10  # the sign-in and the first page fit inside it, on a slow machine
EXPIRED = "Your session has expired — sign in again."


def create_user(gw: Gateway) -> None:
    subprocess.run([sys.executable, "-m", "gatehouse", "users", "create", EMAIL,
                    "--password-stdin", "--config", str(gw.config_path)],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                   timeout=60)


def sign_in(page: Page, email: str = EMAIL, password: str = PASSWORD) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#sign-in")


def test_sign_in_expire_and_sign_out(browser: Browser,
                                     start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"identity": {"require_key": True,
                                     "session_idle_minutes": IDLE_SECONDS / 60}})
    create_user(gw)
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    page.goto(gw.url + "/account")
    assert page.url == gw.url + "/login?next=/account"
    expect(page.locator("h1")).to_have_text("Sign in")
    assert page.locator("#request-id").inner_text().startswith("req_")

    sign_in(page)
    page.wait_for_url(gw.url + "/account")
    expect(page.locator("#email")).to_have_text(EMAIL)
    cookie = next(c for c in page.context.cookies() if c["name"] == "gatehouse_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    # scripts cannot read the session cookie
    assert "gatehouse_session" not in page.evaluate("document.cookie")

    time.sleep(IDLE_SECONDS + 1.5)
    page.reload()
    page.wait_for_url("**/login?reason=session_expired&next=/account")
    expect(page.locator("#notice")).to_have_text(EXPIRED)

    sign_in(page)
    page.wait_for_url(gw.url + "/account")
    expect(page.locator("#email")).to_have_text(EMAIL)
    page.click("#sign-out")
    page.wait_for_url(gw.url + "/login?reason=signed_out")
    expect(page.locator("#notice")).to_have_text("You have signed out.")
    assert not [c for c in page.context.cookies() if c["name"] == "gatehouse_session"]

    page.goto(gw.url + "/account")
    assert page.url == gw.url + "/login?next=/account"
    assert not [m for m in problems if "Content Security Policy" in m], problems
    page.close()


# the date is shown too when the lock ends on another (UTC) day: a run just before midnight
LOCKED = re.compile(r"Too many failed sign-ins for this email address or from your network\. "
                    r"You can try again in (\d+) seconds, at "
                    r"((?:\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d) UTC\.")


def test_the_lockout_page_says_when_to_try_again(browser: Browser,
                                                 start_gateway: Callable[..., Gateway]) -> None:
    """Issue 12: after the free failures the person is told, on the page, when they can try
    again — in the same words for an account that exists and for one that does not."""
    # a 45 s lock reads "45 seconds" (or 44…): a 60 s one read "1 minute" when the page was quick
    gw = start_gateway({"identity": {"require_key": True, "sign_in": {
        "account_free_failures": 1, "first_lock_seconds": 45}}})
    create_user(gw)
    for email in (EMAIL, "nobody@example.com"):
        page = browser.new_page()
        statuses: list[tuple[int, str | None]] = []
        page.on("response", lambda r: statuses.append((r.status, r.headers.get("retry-after")))
                if r.request.method == "POST" else None)
        page.goto(gw.url + "/login")
        sign_in(page, email, "not the password")
        expect(page.locator("#error")).to_have_text("Email or password is wrong.")
        sign_in(page, email, "still not the password")  # this one locks it
        expect(page.locator("#error")).to_contain_text("Email or password is wrong. Too many")
        sign_in(page, email)  # the right password (for the real one), while locked
        expect(page.locator("#error")).to_have_text(LOCKED)
        shown = LOCKED.search(page.locator("#error").inner_text())
        assert shown is not None
        assert [s for s, _ in statuses] == [401, 401, 429]
        assert statuses[2][1] == shown.group(1)  # Retry-After says what the page says
        assert page.url == gw.url + "/login"
        assert not [c for c in page.context.cookies() if c["name"] == "gatehouse_session"]
        page.close()
