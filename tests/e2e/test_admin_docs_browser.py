"""The admin API's docs page in real headless Chromium, with every request that leaves
127.0.0.1 blocked: it must render from the gateway's own copy of Swagger UI (no CDN)."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Browser, expect

from tests.e2e.conftest import keep_local
from tests.support.procs import Gateway


def test_admin_docs_render_offline(start_gateway: Callable[..., Gateway],
                                   browser: Browser) -> None:
    gw = start_gateway({})
    page = browser.new_page()
    try:
        outside = keep_local(page, gw.url)
        page.goto(gw.url + "/admin/v1/docs")
        # Swagger UI built the page from /admin/v1/openapi.json
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "gatehouse admin API", timeout=20_000)
        expect(page.locator(".opblock-tag", has_text="orgs").first).to_be_visible()
        page.screenshot(path=str(gw.log.with_suffix(".admin-docs.png")))
    finally:
        page.close()
    assert outside == []
