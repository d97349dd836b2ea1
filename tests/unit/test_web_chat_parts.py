"""The web chat's parts that need no gateway: the words of each error view, reading the
pipeline's stream, following an answer from an offset, and conversation titles."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gatehouse.config import Settings
from gatehouse.context import RequestContext
from gatehouse.errors import (
    ALL_ERRORS,
    AccessDenied,
    AtCapacity,
    IdentityUnavailable,
    RateLimited,
)
from gatehouse.identity.principal import Principal
from gatehouse.store.conversations import Conversations, title_from
from gatehouse.store.db import Store
from gatehouse.web.chatstage import ChatStage
from gatehouse.web.chatwords import view
from gatehouse.web.generation import MAX_LINE, Generation, Generations, SSEReader, apply
from tests.unit.conftest import make_settings


def test_at_capacity_says_the_real_wait_and_who_goes_first() -> None:
    error = AtCapacity("demo is at capacity right now; try again in 7 s.", retry_after=6.2)
    shown = view(orjson.loads(error.body("req_1")), error.response_headers()["retry-after"],
                 now=1000.0)
    assert shown["title"] == "At capacity right now"
    assert shown["next"] == "Try again in 7 s; Plus and Pro are served first."
    assert shown["retry_after"] == 7 and shown["resets_at"] == 1007.0
    assert shown["message"] == error.message and shown["request_id"] == "req_1"
    assert shown["action"] == "retry" and shown["status_link"]


def test_a_limit_leaves_the_time_to_the_browser() -> None:
    error = RateLimited("Rate limit reached", unit="tokens", retry_after=120)
    shown = view(orjson.loads(error.body("req_2")), "120", now=0.0)
    assert shown["next"] == "It resets at {resets}. Your account page shows each limit."
    assert shown["resets_at"] == 120.0 and shown["type"] == "tokens"


def test_the_edge_view_carries_the_ray_id() -> None:
    error = AccessDenied("Access denied (Error 1020).", ray_id="8f3a2b1c4d5e6f70")
    shown = view(orjson.loads(error.body("req_3")))
    assert shown["ray_id"] == "8f3a2b1c4d5e6f70" and shown["title"] == "Access denied"


def test_every_error_the_gateway_answers_has_words() -> None:
    for cls in ALL_ERRORS:
        shown = view({"error": {"type": cls.type, "code": cls.code, "message": "m"}})
        assert shown["title"] and shown["next"], cls
    unknown = view({"error": {"type": "server_error", "code": "weird", "message": "m"}})
    assert unknown["action"] == "retry" and unknown["next"].startswith("Your message is kept")
    assert view({})["title"] == "Something went wrong"


def test_the_stream_is_read_across_chunk_boundaries_and_bounded() -> None:
    gen = Generation("msg_1", "conv_1", "user_1", "req_1")
    reader = SSEReader()
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"Hel'
    for part in (chunk, b'lo"},"finish_reason":null}]}\n\ndata: {"choices":[{"index":0,',
                 b'"delta":{"content":" you"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'):
        for data in reader.feed(part):
            apply(gen, data)
    assert gen.text == "Hello you" and gen.finish_reason == "stop"
    for data in reader.feed(b'data: {"error": {"code": null, "message": "broke"}}\n\n'):
        apply(gen, data)
    assert gen.broken is not None and gen.broken["error"]["message"] == "broke"
    for junk in (b"not json", b"[1]", b'{"choices": [1, {"index": 1}]}'):
        apply(gen, junk)
    assert gen.text == "Hello you"
    reader.feed(b"data: " + b"x" * (2 * MAX_LINE))
    assert len(reader._rest) <= MAX_LINE


def test_following_from_an_offset() -> None:
    async def run() -> list[bytes]:
        gen = Generation("msg_1", "conv_1", "user_1", "req_1")
        gen.add("Hello")
        got: list[bytes] = []

        async def follow() -> None:
            async for event in gen.follow(2):
                got.append(event)

        task = asyncio.ensure_future(follow())
        await asyncio.sleep(0)
        gen.add(" world")
        await asyncio.sleep(0)
        gen.finish("done", None)
        await asyncio.wait_for(task, 5)
        return got

    events = asyncio.run(run())
    texts = [orjson.loads(e.split(b"data: ")[1]) for e in events]
    assert "".join(t.get("text", "") for t in texts) == "llo world"
    assert texts[-1] == {"status": "done", "view": None}
    assert events[-1].startswith(b"id: 11\n")


def test_titles_come_from_the_first_line_cut_at_a_word() -> None:
    assert title_from("  hello\n  there ") == "hello there"
    assert title_from("") == "New chat"
    long = title_from("word " * 40)
    assert long.endswith("…") and len(long) <= 61 and not long.endswith(" …")


def test_the_store_down_is_a_503_with_a_retry_not_a_500() -> None:
    async def run(body: dict[str, Any]) -> None:
        store = Store("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # nothing listens there
        stage = ChatStage(Settings(), Conversations(store), lambda: ["demo"], Generations())
        ctx = RequestContext("req_1", "POST", "/chat/send",
                             {"content-type": "application/json"}, None)
        ctx.principal = Principal("session", "free", user_id="user_1")
        raw = orjson.dumps(body)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        ctx.receive = receive
        try:
            with pytest.raises(IdentityUnavailable) as caught:
                await stage.enter(ctx)
        finally:
            await store.aclose()
        shown = view(orjson.loads(caught.value.body("req_1")), "5")
        assert shown["action"] == "retry" and shown["next"].startswith("Your message is kept")

    asyncio.run(run({"model": "demo", "content": "hi"}))
    asyncio.run(run({"model": "demo", "content": "hi", "conversation": "conv_1"}))


async def test_the_home_page_is_the_chat_only_when_it_is_on(
        gateway_client: Any) -> None:
    on = await gateway_client()
    home = await on.get("/", headers={"accept": "text/html"})
    assert home.status_code == 303 and home.headers["location"] == "/login?next=/"
    # "/" mounted is the home page alone: other unknown paths stay the API's 404
    for path in ("/nope", "/c", "/chatx"):
        unknown = await on.get(path)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    off = await gateway_client(web={"chat": False})
    for path in ("/", "/chat/conversations", "/c/conv_1"):
        gone = await off.get(path)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_url", path
    assert (await off.post("/chat/send", json={})).status_code == 404


def test_a_tier_may_only_name_models_that_are_served() -> None:
    with pytest.raises(ValueError):
        make_settings(tiers={"free": {"kind": "web", "models": ["nope"]}})
    assert make_settings(tiers={"free": {"kind": "web", "models": ["demo"]}}).tiers[
        "free"].models == ["demo"]


async def test_a_stop_published_on_the_state_layer_stops_only_the_owners_answer() -> None:
    from gatehouse.state.memory import MemoryState

    state = MemoryState()
    here = Generations(state)
    await here.start()
    gen = Generation("msg_1", "conv_1", "user_1", "req_1")
    gen.task = asyncio.ensure_future(asyncio.sleep(30))
    here.live[gen.message_id] = gen
    await here.stop_elsewhere("user_2", "msg_1")  # someone else's id: nothing happens
    await here.stop_elsewhere("user_1", "msg_9")
    assert not gen.stopped
    await here.stop_elsewhere("user_1", "msg_1")
    assert gen.stopped
    with pytest.raises(asyncio.CancelledError):
        await gen.task
    here._heard(None)  # a lost subscription is survived
    here._heard(b"garbage")


async def test_following_from_the_store_polls_until_the_end_and_is_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gatehouse.store.tables import ChatMessage
    from gatehouse.web import generation
    from gatehouse.web.generation import follow_stored

    def row(content: str, status: str) -> ChatMessage:
        return ChatMessage(id="msg_1", content=content, status=status)

    saved = iter([row("Hello wor", "streaming"), row("Hello world, t", "streaming"),
                  row("Hello world, the end", "done")])

    async def read() -> ChatMessage | None:
        return next(saved)

    def shown(m: ChatMessage) -> tuple[str, dict[str, Any] | None]:
        return m.status, None

    out = [orjson.loads(e.split(b"data: ")[1]) async for e in
           follow_stored(read, shown, 3, row("Hello", "streaming"), every=0)]
    assert out == [{"text": "lo"}, {"text": " wor"}, {"text": "ld, t"}, {"text": "he end"},
                   {"status": "done", "view": None}]

    async def still() -> ChatMessage | None:
        return row("forever", "streaming")

    monkeypatch.setattr(generation, "MAX_POLLS", 5)
    ends = [e async for e in follow_stored(still, shown, 0, row("", "streaming"), every=0)]
    assert len(ends) == 2 and b'"incomplete"' in ends[-1]

    async def gone() -> ChatMessage | None:
        return None

    deleted = [e async for e in follow_stored(gone, shown, 0, row("x", "streaming"), every=0)]
    assert b'"stopped"' in deleted[-1]
