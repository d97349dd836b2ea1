"""Sign-in, idle expiry and sign-out in a real headless Chromium against a real gateway.

Uses the Debian ``chromium`` binary (not Playwright's own download). A missing browser fails
the test: .ci/run installs it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from playwright.sync_api import Page, expect, sync_playwright

from tests.support.procs import Gateway

CHROMIUM = "/usr/bin/chromium"
EMAIL = "grace@example.com"
PASSWORD = "a long enough password"
IDLE_SECONDS = 3
EXPIRED = "Your session has expired — sign in again."


def create_user(gw: Gateway) -> None:
    subprocess.run([sys.executable, "-m", "gatehouse", "users", "create", EMAIL,
                    "--password-stdin", "--config", str(gw.config_path)],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                   timeout=60)


def sign_in(page: Page) -> None:
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")


def test_sign_in_expire_and_sign_out(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"identity": {"require_key": True,
                                     "session_idle_minutes": IDLE_SECONDS / 60}})
    create_user(gw)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        try:
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
        finally:
            browser.close()
