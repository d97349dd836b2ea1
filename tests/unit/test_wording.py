"""What the gateway says is true: who made a ban and how long it lasts in words, the same
seconds in the message as in Retry-After, a 404 that does not send visitors to our repository,
and a browser told why its session ended when an administrator ended it."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gatehouse.errors import AtCapacity, roughly, whole_seconds
from gatehouse.pipeline import answer
from tests.unit.test_web_sessions import (  # noqa: F401  (fixtures)
    EMAIL,
    Site,
    make_site,
    session_of,
    sign_in,
    site,
)

PAGE = {"accept": "text/html"}


@pytest.mark.parametrize(("seconds", "said"), [
    (0.2, "1 second"), (45, "45 seconds"), (89.5, "90 seconds"), (180, "about 3 minutes"),
    (43166, "about 12 hours"), (86400 * 3, "about 3 days"), (5400, "about 2 hours")])
def test_waits_in_words(seconds: float, said: str) -> None:
    assert roughly(seconds) == said


def test_at_capacity_says_the_seconds_retry_after_says() -> None:
    for wait in (0.4, 1.0, 1.2, 2.5):
        error = AtCapacity(f"m is at capacity right now; try again in {whole_seconds(wait)} s.",
                           retry_after=wait)
        reply = answer(error, "req_x", True)
        seconds = reply.headers["retry-after"]
        assert f"try again in {seconds} s." in error.message
        assert f"You can try again in {seconds} s." in reply.body.decode()


async def test_bans_say_who_made_them_and_when_they_end(
        gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    client = await gateway_client(edge={"trusted_proxies": ["10.0.0.1/32"]})
    app = client._transport.app  # type: ignore[attr-defined]
    edge = app.routes["/v1/models"].pipeline.stages[1].edge
    await edge.bans.ban("198.51.100.7", "banned by an administrator", 12 * 3600)
    edge.bans.hold("198.51.100.8", "more than 1000 requests in 10 s", 60)
    by_hand = await client.get("/v1/models", headers={**PAGE, "x-forwarded-for": "198.51.100.7"})
    assert by_hand.status_code == 403
    assert "operators of this service have blocked your address" in by_hand.text
    assert "too many requests" not in by_hand.text
    assert "ends by itself in about 12 hours" in by_hand.text and "seconds" not in by_hand.text
    auto = await client.get("/v1/models", headers={"x-forwarded-for": "198.51.100.8"})
    assert "too many requests or failed sign-ins" in auto.json()["error"]["message"]


async def test_the_404_page_points_at_the_api_not_at_our_docs(
        gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    client = await gateway_client()
    for headers in ({}, PAGE):
        r = await client.get("/nowhere", headers=headers)
        assert r.status_code == 404 and "docs/api.md" not in r.text
        assert "/v1/" in r.text


@pytest.mark.parametrize(("disable", "notice"), [
    (False, "An administrator signed you out — sign in again."),
    (True, "Your account has been disabled. Ask your administrator.")])
async def test_a_session_ended_by_an_administrator_says_so(site: Site, disable: bool,
                                                           notice: str) -> None:
    c = site.client()
    await sign_in(c)
    cookie = session_of(c)
    user = await site.identity.accounts.user_by_email(EMAIL)
    assert user is not None
    if disable:
        await site.identity.accounts.update_user(EMAIL, disabled=True)
    await site.identity.sessions.end_all(user.id, "account_disabled" if disable
                                         else "signed_out_by_admin")
    page = await c.get("/account", follow_redirects=True)
    assert notice in page.text and "has expired" not in page.text
    api = await c.get("/v1/models", headers={"cookie": f"gatehouse_session={cookie}",
                                             "accept": "application/json"})
    assert api.status_code == 401 and api.json()["error"]["message"] == notice


async def test_the_challenge_page_and_its_json_carry_the_request_id(
        gateway_client: Callable[..., httpx.AsyncClient]) -> None:
    client = await gateway_client(edge={"rules": [{"action": "challenge", "path": "^/login"}]})
    page = await client.get("/login", headers=PAGE)
    assert page.status_code == 403 and "Checking your browser" in page.text
    rid = page.headers["x-request-id"]
    assert f'Request ID <code id="request-id">{rid}</code>' in page.text
    asked = await client.get("/login", headers={"accept": "application/json"})
    assert asked.json()["request_id"] == asked.headers["x-request-id"]
