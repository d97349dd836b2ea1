"""The web chat in a real headless Chromium against a real gateway (one for the module): sign
in, streamed answers, stop/regenerate/edit, history across reloads and a closed tab, safe
Markdown, and each failure's view — forced through the real pipeline — with its ids.

Screenshots of every state are kept in the test run's tmp dir (``chat-screens*``)."""

from __future__ import annotations

import re
import time
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.e2e.conftest import keep_local
from tests.support.chat import (
    BLOCKED_UA,
    CHALLENGED_UA,
    MAX_CONVERSATION,
    PASSWORD,
    chat_config,
    create_users,
    page_data,
)
from tests.support.procs import Gateway, Upstream, open_stream

expect.set_options(timeout=20_000)
PREAMBLE = "This is the gatehouse demo backend, not a language model. You said:"


@pytest.fixture(scope="module")
def gw(proc_dir: Path, up_a: Upstream) -> Iterator[Gateway]:
    gateway = Gateway(proc_dir, chat_config(up_a), start_timeout=180)
    create_users(gateway)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chat-screens")


class Session:
    """A browser context signed in as one person, watching for CSP errors and requests that
    leave the gateway."""

    def __init__(self, browser: Browser, gw: Gateway, email: str, shots: Path,
                 **context: Any) -> None:
        self.gw, self.shots = gw, shots
        self.context: BrowserContext = browser.new_context(**context)
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text)
                     if m.type == "error" and "Failed to load resource" not in m.text else None)
        self.outside = keep_local(self.page, gw.url)
        self.page.goto(gw.url + "/")
        assert self.page.url == gw.url + "/login?next=/"
        sign_in(self.page, email)
        self.page.wait_for_url(gw.url + "/")
        expect(self.page.locator("#input")).to_be_focused()

    def send(self, text: str) -> None:
        self.page.fill("#input", text)
        self.page.keyboard.press("Enter")

    def last_answer(self) -> Any:
        return self.page.locator(".msg.assistant").last

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def close(self) -> None:
        assert not [p for p in self.problems if "Content Security Policy" in p], self.problems
        assert not self.outside, self.outside
        self.context.close()


def sign_in(page: Page, email: str) -> None:
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")


def conversation_of(page: Page) -> str:
    found = re.search(r"/c/(conv_\w+)$", page.url)
    assert found is not None, page.url
    return found.group(1)


def test_chat_streams_reloads_stops_regenerates_and_edits(browser: Browser, gw: Gateway,
                                                          shots: Path, up_a: Upstream) -> None:
    s = Session(browser, gw, "main@example.com", shots)
    page = s.page
    assert page.locator("#model option").all_inner_texts() == ["m", "busy", "demo"]
    page.select_option("#model", "demo")
    # the answer arrives token by token: seen part-way, then whole
    seen: list[int] = []
    page.expose_function("seen", lambda n: seen.append(n))
    page.evaluate("""() => new MutationObserver(() => {
        const a = document.querySelector('.msg.assistant[data-status=streaming] .text');
        if (a) window.seen(a.textContent.length);
      }).observe(document.getElementById('messages'), {subtree: true, childList: true,
                                                       characterData: true})""")
    s.send("hello there")
    answer = s.last_answer()
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".text")).to_contain_text(f"{PREAMBLE} hello there hello there")
    # several partial lengths were shown (a starved browser draws fewer of the 60 deltas)
    assert len({n for n in seen if n > 0}) >= 2, seen
    cid = conversation_of(page)
    expect(page.locator(f'#conversations li[data-id="{cid}"] a')).to_have_text("hello there")
    expect(page.locator(f'#conversations li[data-id="{cid}"] a')).to_have_attribute(
        "aria-current", "page")
    s.shot("1-answered")

    page.reload()
    expect(page.locator(".msg")).to_have_count(2)
    expect(page.locator(".msg.user .text")).to_have_text("hello there")
    expect(s.last_answer()).to_have_attribute("data-status", "done")

    # regenerate: the last answer is made again
    page.click(".msg.assistant .regenerate")
    expect(page.locator(".msg")).to_have_count(2)
    expect(s.last_answer()).to_have_attribute("data-status", "done")

    # edit and resend: the message and everything after it are replaced
    page.click(".msg.user .edit")
    expect(page.locator("#input")).to_have_value("hello there")
    expect(page.locator("#editing")).to_be_visible()
    page.fill("#input", "hello again")
    page.keyboard.press("Enter")
    expect(page.locator(".msg.user .text")).to_have_text("hello again")
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    expect(s.last_answer().locator(".text")).to_contain_text("You said: hello again")
    page.reload()
    expect(page.locator(".msg")).to_have_count(2)
    expect(page.locator(".msg.user .text")).to_have_text("hello again")

    # stop: the partial answer is kept and marked — of a 12-s answer (60 words, 200 ms
    # each), so the click lands inside it however starved the machine
    up_a.control(ms_per_token=200)
    page.select_option("#model", "m")
    s.send("please stop me soon")
    expect(s.last_answer().locator(".text")).not_to_have_text("")
    page.click("#stop")
    expect(s.last_answer()).to_have_attribute("data-status", "stopped")
    partial = s.last_answer().locator(".text").inner_text()
    assert partial.startswith("a") and "w59" not in partial
    expect(s.last_answer().locator(".mark")).to_have_text("Stopped — the answer is partial.")
    s.shot("2-stopped")
    page.reload()
    expect(s.last_answer()).to_have_attribute("data-status", "stopped")
    expect(s.last_answer().locator(".text")).to_have_text(partial)
    s.close()


def test_sign_up_lands_in_the_chat_and_sends(browser: Browser, gw: Gateway,
                                            shots: Path) -> None:
    context = browser.new_context()
    page = context.new_page()
    outside = keep_local(page, gw.url)
    page.goto(gw.url + "/")
    page.click("#sign-up-link")
    page.wait_for_url(gw.url + "/signup?next=/")
    email = f"new-{secrets.token_hex(4)}@example.com"
    page.fill("#email", email)
    page.fill("#password", "short")
    page.fill("#password_again", "short")
    page.evaluate("document.querySelector('form').noValidate = true")  # the server's rule
    page.click("#sign-up")
    expect(page.locator("#error")).to_contain_text("at least 10 characters")
    page.fill("#password", "my new password")
    page.fill("#password_again", "my new password")
    page.click("#sign-up")
    page.wait_for_url(gw.url + "/")
    expect(page.locator("#input")).to_be_focused()
    page.select_option("#model", "demo")
    page.fill("#input", "hello from a new account")
    page.keyboard.press("Enter")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".text")).to_contain_text(f"{PREAMBLE} hello from a new account")
    page.screenshot(path=str(shots / "signed-up.png"), full_page=True)
    assert not outside
    context.close()


def test_model_text_is_never_html_and_code_is_highlighted(browser: Browser, gw: Gateway,
                                                         shots: Path) -> None:
    s = Session(browser, gw, "main@example.com", shots)
    page = s.page
    page.select_option("#model", "demo")
    s.send('<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>')
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    text = s.last_answer().locator(".text")
    expect(text).to_contain_text('<img src=x onerror="window.__xss=1"><script>')
    assert page.locator("#messages img, #messages script").count() == 0
    assert page.evaluate("window.__xss") is None
    s.send("**bold** and `code`\n```python\nimport os\nprint('hi')\n```")
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    answer = s.last_answer()
    expect(answer.locator("strong").first).to_have_text("bold")
    code = answer.locator("pre code").first
    expect(code).to_have_attribute("data-lang", "python")
    expect(code.locator(".tok-k").first).to_have_text("import")
    expect(code.locator(".tok-s")).to_have_text("'hi'")
    expect(answer.locator("pre .copy").first).to_have_text("Copy")
    s.shot("3-markdown")
    # at phone width the list folds behind the "Chats" button; the message box stays
    page.set_viewport_size({"width": 390, "height": 800})
    expect(page.locator("#sidebar")).to_be_hidden()
    expect(page.locator("#input")).to_be_visible()
    page.click("#toggle-list")
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#toggle-list")).to_have_attribute("aria-expanded", "true")
    s.shot("3-phone")
    s.close()


def test_rename_find_and_delete(browser: Browser, gw: Gateway, shots: Path) -> None:
    s = Session(browser, gw, "other@example.com", shots)
    page = s.page
    page.select_option("#model", "demo")
    s.send("a conversation to rename")
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    cid = conversation_of(page)
    item = page.locator(f'#conversations li[data-id="{cid}"]')
    page.once("dialog", lambda d: d.accept("Holiday plans"))
    item.locator(".rename").click()
    expect(item.locator("a")).to_have_text("Holiday plans")
    expect(page.locator("#title")).to_have_text("Holiday plans")
    page.fill("#find", "no such words")
    expect(page.locator("#conversations li")).to_have_count(0)
    page.fill("#find", "Holiday")
    expect(page.locator("#conversations li")).to_have_count(1)
    page.once("dialog", lambda d: d.accept())
    item.locator(".delete").click()
    expect(page.locator("#conversations li")).to_have_count(0)
    expect(page.locator("#title")).to_have_text("New chat")
    assert page.url == gw.url + "/"
    gone = page.goto(gw.url + f"/c/{cid}")
    assert gone is not None and gone.status == 404
    s.close()


def test_a_closed_tab_gets_its_whole_answer_back(browser: Browser, gw: Gateway,
                                                 shots: Path) -> None:
    s = Session(browser, gw, "main@example.com", shots)
    page = s.page
    page.select_option("#model", "demo")
    s.send("keep going without me")
    expect(s.last_answer().locator(".text")).not_to_have_text("")
    cid = conversation_of(page)
    page.close()
    again = s.context.new_page()
    again.goto(gw.url + f"/c/{cid}")
    answer = again.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".text")).to_contain_text(f"{PREAMBLE} keep going without me")
    s.page = again
    s.shot("4-reopened")
    s.context.close()


def view_of(page: Page, code: str) -> Any:
    box = page.locator(f'.view[data-code="{code}"]').last
    expect(box).to_be_visible()
    expect(box.locator(".rid")).to_have_text(re.compile(r"^req_\w+$"))
    return box


def test_at_capacity_and_copy_support_details(browser: Browser, gw: Gateway, shots: Path,
                                              up_a: Upstream) -> None:
    s = Session(browser, gw, "free@example.com", shots,
                permissions=["clipboard-read", "clipboard-write"], timezone_id="Asia/Tokyo")
    page = s.page
    assert page.locator("#model option").all_inner_texts() == ["busy", "demo"]
    up_a.control(ms_per_token=400)
    hog = open_stream(gw, "unused", model="busy")
    try:
        s.send("is there room?")
        box = view_of(page, "at_capacity")
    finally:
        hog.close()
    expect(box.locator("h2")).to_have_text("At capacity right now")
    expect(box.locator(".next")).to_have_text(
        re.compile(r"^Try again in \d+ s; Plus and Pro are served first\.$"))
    expect(page.locator("#input")).to_have_value("is there room?")  # the message is kept
    s.shot("5-at-capacity")
    box.locator(".support").click()
    expect(box.locator(".support")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    rid = box.locator(".rid").inner_text()
    assert f"Request ID: {rid}" in copied and "Ray ID: none" in copied
    assert "[Asia/Tokyo]" in copied and "Conversation: " + gw.url in copied
    assert "Browser: Mozilla/5.0" in copied and "at_capacity" in copied
    # retry once there is room
    up_a.reset()
    box.locator(".retry").click()
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    expect(page.locator(".view")).to_have_count(0)
    s.close()


# the next full UTC hour as the page should show it: the time, and the day when not today
LOCAL_RESET = """(real) => {
    const d = new Date(real), now = new Date();
    d.setUTCMinutes(0, 0, 0); d.setUTCHours(d.getUTCHours() + 1);
    const shown = {hour: '2-digit', minute: '2-digit'};
    if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], shown);
    Object.assign(shown, {weekday: 'short', month: 'short', day: 'numeric'});
    if (d.getFullYear() !== now.getFullYear()) shown.year = 'numeric';
    return d.toLocaleString([], shown); }"""


def test_limit_reached_says_when_in_the_browsers_time_zone(browser: Browser, gw: Gateway,
                                                           shots: Path) -> None:
    s = Session(browser, gw, "tiny@example.com", shots, timezone_id="America/Denver")
    page = s.page
    page.select_option("#model", "demo")
    s.send("one")
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    s.send("two")
    box = view_of(page, "rate_limit_exceeded")
    expect(box.locator("h2")).to_have_text("You've reached your limit")
    resets = re.compile(r"^It resets at ((?:\w+, \w+ \d+, (?:\d{4}, )?)?\d\d:\d\d(?: [AP]M)?) "
                        r"\(America/Denver\)\. Your account page shows each limit\.$")
    expect(box.locator(".next")).to_have_text(resets)
    # the hour's window ends at the next full hour: the time, and the day when it is not today
    # here (a run just before midnight in Denver)
    expected = page.evaluate(LOCAL_RESET, time.time() * 1000)
    shown = resets.search(box.locator(".next").inner_text())
    assert shown is not None and shown.group(1) == expected
    s.shot("6-limit-reached")
    # a person whose clock reads two days earlier: the reset is not today, so its day is shown
    page.clock.set_fixed_time(time.time() - 2 * 86_400)
    s.send("three")
    expect(page.locator(".msg.user").last).to_have_text("three")
    limited = page.locator('.view[data-code="rate_limit_exceeded"] .next').last
    expect(limited).to_have_text(re.compile(r"^It resets at \w+, "))  # the new answer's view
    expect(limited).to_have_text(resets)
    shown = resets.search(limited.inner_text())
    assert shown is not None and ", " in shown.group(1)
    assert shown.group(1) == page.evaluate(LOCAL_RESET, time.time() * 1000)
    page.click("#account-link")
    expect(page.locator('#limits tr[data-limit="response_tokens_per_hour"]')).to_be_visible()
    expect(page.locator("#sign-out")).to_have_count(1)
    s.close()


def test_upstream_failure_a_broken_stream_and_a_too_long_conversation(
        browser: Browser, gw: Gateway, shots: Path, up_a: Upstream) -> None:
    s = Session(browser, gw, "main@example.com", shots)
    page = s.page
    page.select_option("#model", "m")
    up_a.control(status=500, times=1)
    s.send("anyone there?")
    box = view_of(page, "upstream_error")
    expect(box.locator(".next")).to_have_text(
        "Your message is kept; retry. If it keeps failing, see the status page.")
    expect(box.locator(".status-link")).to_have_attribute("href", "/status")
    expect(page.locator("#input")).to_have_value("anyone there?")
    s.shot("7-upstream-failed")
    box.locator(".retry").click()
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    expect(page.locator(".msg.user")).to_have_count(1)

    up_a.control(fail_after_chunks=3)
    page.click(".msg.assistant .regenerate")
    answer = s.last_answer()
    expect(answer).to_have_attribute("data-status", "incomplete")
    expect(answer.locator(".mark")).to_have_text("Incomplete — the answer broke off.")
    expect(answer.locator(".view h2")).to_have_text("The answer broke off")
    s.shot("8-stream-broken")
    up_a.reset()
    answer.locator(".view .retry").click()
    expect(s.last_answer()).to_have_attribute("data-status", "done")

    page.select_option("#model", "demo")
    page.fill("#input", "y" * 2400)
    page.click("#send")
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    page.fill("#input", "z" * (MAX_CONVERSATION - 2400))
    page.click("#send")
    box = view_of(page, "context_length_exceeded")
    s.shot("9-too-long")
    box.locator(".new-chat").click()
    expect(page.locator("#title")).to_have_text("New chat")
    expect(page.locator(".msg")).to_have_count(0)
    s.close()


def test_session_expired_mid_typing_keeps_the_draft(browser: Browser, gw: Gateway,
                                                    shots: Path) -> None:
    s = Session(browser, gw, "other@example.com", shots)
    page = s.page
    page.select_option("#model", "demo")
    s.send("before it expired")
    expect(s.last_answer()).to_have_attribute("data-status", "done")
    cid = conversation_of(page)
    # the session ends elsewhere (signed out on another device) while this page is open
    cookie = next(c for c in s.context.cookies() if c["name"] == "gatehouse_session")
    with httpx.Client(base_url=gw.url, cookies={cookie["name"]: cookie["value"]}) as other:
        token = page_data(other.get("/").text)["csrf"]
        out = other.post("/logout", data={"csrf": token})
        assert out.status_code == 303
    s.send("a long message I typed carefully")
    box = view_of(page, "session_expired")
    expect(box.locator("h2")).to_have_text("Your session has expired")
    s.shot("10-session-expired")
    box.locator(".sign-in").click()
    page.wait_for_url(re.compile(r"/login\?reason=session_expired&next=%2Fc%2Fconv_"))
    sign_in(page, "other@example.com")
    page.wait_for_url(gw.url + f"/c/{cid}")
    expect(page.locator("#input")).to_have_value("a long message I typed carefully")
    expect(page.locator(".msg")).to_have_count(2)
    s.close()


def test_edge_ban_shows_the_1020_page_and_view_with_a_ray_id(browser: Browser, gw: Gateway,
                                                            shots: Path) -> None:
    blocked = browser.new_context(user_agent=BLOCKED_UA)
    page = blocked.new_page()
    denied = page.goto(gw.url + "/")
    assert denied is not None and denied.status == 403
    expect(page.locator("h1")).to_have_text("Access denied")
    expect(page.locator("#ray-id")).to_have_text(re.compile(r"^\w{16}$"))
    page.screenshot(path=str(shots / "11-1020-page.png"))
    blocked.close()

    # a page already open when the rule starts to match: the view, with the Ray ID
    s = Session(browser, gw, "main@example.com", shots)
    page = s.page
    page.select_option("#model", "demo")

    def as_blocked(route: Route) -> None:
        route.continue_(headers={**route.request.headers, "user-agent": BLOCKED_UA})

    page.route("**/chat/send", as_blocked)
    s.send("am I blocked?")
    box = page.locator('.view[data-code="1020"]')
    expect(box.locator("h2")).to_have_text("Access denied")
    expect(box.locator(".ray")).to_have_text(re.compile(r"^\w{16}$"))
    expect(box.locator(".rid")).to_have_text(re.compile(r"^req_\w+$"))
    s.shot("12-1020-view")
    s.close()


def test_challenge_then_back_to_the_conversation(browser: Browser, gw: Gateway,
                                                 shots: Path) -> None:
    context = browser.new_context(user_agent=CHALLENGED_UA + " Chrome")
    page = context.new_page()
    page.set_default_timeout(30_000)
    challenges: list[str] = []
    page.on("response", lambda r: challenges.append(r.url)
            if r.headers.get("gatehouse-mitigated") == "challenge" else None)
    page.goto(gw.url + "/")
    page.wait_for_url(gw.url + "/login?next=/")  # checked, then on to sign in
    assert challenges
    sign_in(page, "main@example.com")
    page.wait_for_url(gw.url + "/")
    page.select_option("#model", "demo")
    page.fill("#input", "first")
    page.keyboard.press("Enter")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "done")
    cid = conversation_of(page)
    seen = len(challenges)
    context.clear_cookies(name="gatehouse_clearance")  # as when the clearance runs out
    page.fill("#input", "after the check")
    page.keyboard.press("Enter")
    # the send was challenged: the page reloads through the check and comes back, draft kept
    page.wait_for_url(gw.url + f"/c/{cid}")
    expect(page.locator("#input")).to_have_value("after the check")
    expect(page.locator(".msg")).to_have_count(2)
    assert len(challenges) >= seen + 2  # the send, then the page itself
    page.keyboard.press("Enter")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "done")
    expect(page.locator(".msg")).to_have_count(4)
    page.screenshot(path=str(shots / "13-after-challenge.png"))
    context.close()
