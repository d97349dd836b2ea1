"""The admin API's docs page in real headless Chromium, with every request that leaves
127.0.0.1 blocked: it must render from the gateway's own copy of Swagger UI (no CDN)."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Route, expect, sync_playwright

from tests.support.procs import Gateway

CHROMIUM = "/usr/bin/chromium"


def test_admin_docs_render_offline(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({})
    outside: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(gw.url):
            route.continue_()
        else:  # a CDN, or anything else off this machine
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.goto(gw.url + "/admin/v1/docs")
            # Swagger UI built the page from /admin/v1/openapi.json
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "gatehouse admin API", timeout=20_000)
            expect(page.locator(".opblock-tag", has_text="orgs").first).to_be_visible()
            page.screenshot(path=str(gw.log.with_suffix(".admin-docs.png")))
        finally:
            browser.close()
    assert outside == []
