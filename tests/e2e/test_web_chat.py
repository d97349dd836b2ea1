"""The web chat's endpoints over HTTP against a real gateway (one for the module): the send
endpoint is the API's pipeline (quota, admission, telemetry), what is stored, who may see it,
and every refusal in the API's error shape with the page's view beside it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.chat import (
    MAX_CONVERSATION,
    MAX_MESSAGE,
    ChatClient,
    answer_of,
    chat_config,
    create_users,
    events,
)
from tests.support.procs import Gateway, Upstream, open_stream


@pytest.fixture(scope="module")
def gw(proc_dir: object, up_a: Upstream) -> Iterator[Gateway]:
    from pathlib import Path

    assert isinstance(proc_dir, Path)
    gateway = Gateway(proc_dir, chat_config(up_a), start_timeout=180)
    create_users(gateway)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def main(gw: Gateway) -> Iterator[ChatClient]:
    c = ChatClient(gw, "main@example.com")
    yield c
    c.close()


@pytest.fixture(scope="module")
def other(gw: Gateway) -> Iterator[ChatClient]:
    c = ChatClient(gw, "other@example.com")
    yield c
    c.close()


def test_send_streams_saves_and_is_recorded_as_web(gw: Gateway, main: ChatClient) -> None:
    sent = main.send(content="hello there")
    assert sent.status_code == 200 and sent.headers["content-type"] == "text/event-stream"
    meta, text, end = answer_of(sent.text)
    assert "You said: hello there" in text and end == {"status": "done", "view": None}
    assert meta["request_id"] == sent.headers["x-request-id"]
    assert meta["title"] == "hello there"
    # offsets: each delta's id is where the text stands after it
    ids = [int(line[4:]) for line in sent.text.splitlines() if line.startswith("id: ")]
    assert ids[-1] == len(text) and ids == sorted(ids)
    stored = main.http.get(f"/chat/conversations/{meta['conversation']}").json()
    assert [(m["role"], m["status"]) for m in stored["messages"]] == [("user", "done"),
                                                                     ("assistant", "done")]
    assert stored["messages"][1]["content"] == text
    assert stored["messages"][1]["request_id"] == meta["request_id"]
    record = gw.record(meta["request_id"])
    assert record["component"] == "web" and record["endpoint"] == "chat.completions"
    assert record["status"] == 200 and record["tier"] == "plus" and record["model"] == "demo"
    assert record["user_id"] and record["completion_tokens"] == 60


def test_regenerate_edit_rename_find_and_delete(main: ChatClient) -> None:
    meta, _, _ = answer_of(main.send(content="first question").text)
    cid = meta["conversation"]
    answer_of(main.send(conversation=cid, content="second question").text)
    again = main.send(conversation=cid, regenerate=True)
    _, text, _ = answer_of(again.text)
    assert "second question" in text
    msgs = main.http.get(f"/chat/conversations/{cid}").json()["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    edited = main.send(conversation=cid, edit=msgs[2]["id"], content="better question")
    assert "better question" in answer_of(edited.text)[1]
    msgs = main.http.get(f"/chat/conversations/{cid}").json()["messages"]
    assert [m["content"] for m in msgs if m["role"] == "user"] == ["first question",
                                                                    "better question"]
    h = {"x-csrf-token": main.csrf}
    assert main.http.patch(f"/chat/conversations/{cid}", json={"title": "Renamed  one"},
                           headers=h).status_code == 200
    found = main.http.get("/chat/conversations", params={"find": "better quest"}).json()
    assert [c["title"] for c in found["data"]] == ["Renamed one"]
    assert main.http.get("/chat/conversations", params={"find": "100%_"}).json()["data"] == []
    assert main.http.delete(f"/chat/conversations/{cid}", headers=h).status_code == 200
    assert main.http.get(f"/chat/conversations/{cid}").status_code == 404


def test_pages_are_bounded(main: ChatClient) -> None:
    for i in range(3):
        answer_of(main.send(content=f"paging {i}").text)
    first = main.http.get("/chat/conversations", params={"limit": 2}).json()
    assert len(first["data"]) == 2 and first["next"] is not None
    rest = main.http.get("/chat/conversations", params={"limit": 2, "before": first["next"]})
    assert rest.status_code == 200
    assert not {c["id"] for c in first["data"]} & {c["id"] for c in rest.json()["data"]}
    huge = main.http.get("/chat/conversations", params={"limit": 100000}).json()
    assert len(huge["data"]) <= 100
    bad = main.http.get("/chat/conversations", params={"limit": "many"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_another_users_conversation_is_not_found(main: ChatClient, other: ChatClient) -> None:
    meta, _, _ = answer_of(main.send(content="my secret").text)
    cid, mid = meta["conversation"], meta["message"]
    h = {"x-csrf-token": other.csrf}
    missing = other.http.get("/chat/conversations/conv_0000000000000000")
    theirs = other.http.get(f"/chat/conversations/{cid}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"] == missing.json()["error"]
    answers = [
        other.http.patch(f"/chat/conversations/{cid}", json={"title": "mine"}, headers=h),
        other.http.delete(f"/chat/conversations/{cid}", headers=h),
        other.http.get(f"/chat/messages/{mid}/events"),
        other.http.post(f"/chat/messages/{mid}/stop", headers=h),
        other.send(conversation=cid, content="let me in"),
        other.http.get(f"/c/{cid}", headers={"accept": "text/html"}),
    ]
    assert [r.status_code for r in answers] == [404] * 6
    assert all(r.json()["error"]["code"] == "not_found" for r in answers[:5])
    # still there, unchanged, for its owner
    mine = main.http.get(f"/chat/conversations/{cid}").json()
    assert mine["title"] == "my secret" and len(mine["messages"]) == 2
    assert "my secret" not in other.http.get("/chat/conversations",
                                             params={"find": "secret"}).text


def test_changes_need_the_csrf_header(gw: Gateway, main: ChatClient) -> None:
    meta, _, _ = answer_of(main.send(content="csrf").text)
    cid = meta["conversation"]
    for token in (None, "wrong"):
        h = {"x-csrf-token": token} if token else {}
        answers = [
            main.http.post("/chat/send", json={"model": "demo", "content": "x"}, headers=h),
            main.http.patch(f"/chat/conversations/{cid}", json={"title": "x"}, headers=h),
            main.http.delete(f"/chat/conversations/{cid}", headers=h),
            main.http.post(f"/chat/messages/{meta['message']}/stop", headers=h),
        ]
        assert [r.status_code for r in answers] == [403] * 4
        for r in answers:
            body = r.json()
            assert body["error"]["code"] == "csrf_failed" and body["request_id"].startswith("req_")
            assert body["view"]["action"] == "reload" and body["view"]["request_id"]
    assert main.http.get(f"/chat/conversations/{cid}").json()["title"] == "csrf"


def test_bad_input_is_a_4xx(main: ChatClient) -> None:
    h = {"x-csrf-token": main.csrf, "content-type": "application/json"}
    cases = [
        (main.http.post("/chat/send", content=b"{not json", headers=h), 400, "invalid_json"),
        (main.http.post("/chat/send", content=b"[1]", headers=h), 400, "invalid_json"),
        (main.send(content=""), 400, "invalid_type"),
        (main.send(content=7), 400, "invalid_type"),
        (main.send(content="x" * (MAX_MESSAGE + 1)), 413, "request_too_large"),
        (main.send(content="x", model="no-such-model"), 404, "model_not_found"),
        (main.send(content="x", conversation=["x"]), 400, "invalid_type"),
        (main.send(regenerate=True), 400, "missing_required_parameter"),
        (main.http.post("/chat/send", content=b"x" * 200_000, headers=h), 413,
         "request_too_large"),
        (main.http.patch("/chat/conversations/conv_x", content=b"{", headers=h), 400,
         "invalid_json"),
        (main.http.patch("/chat/conversations/conv_x", json={"title": "t" * 201},
                         headers={"x-csrf-token": main.csrf}), 413, "request_too_large"),
        (main.http.get("/chat/messages/msg_x/events", headers={"last-event-id": "x"}), 400,
         "invalid_value"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (code, response.text)
        body = response.json()
        assert body["error"]["code"] == code and body["view"]["title"], body


def test_a_key_or_nobody_cannot_use_the_chat(gw: Gateway, up_a: Upstream) -> None:
    anonymous = httpx.post(gw.url + "/chat/send", json={"model": "demo", "content": "hi"})
    assert anonymous.status_code == 401
    assert anonymous.json()["view"]["action"] == "sign_in"
    assert httpx.get(gw.url + "/chat/conversations").status_code == 401
    page = httpx.get(gw.url + "/")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/"


def test_a_closed_tab_does_not_end_the_answer(main: ChatClient) -> None:
    with main.http.stream("POST", "/chat/send", json={"model": "demo", "content": "go on"},
                          headers={"x-csrf-token": main.csrf}) as s:
        first = b""
        for chunk in s.iter_raw():
            first += chunk
            if b"event: delta" in first:
                break
    meta = events(first.decode())[0][1]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msgs = main.http.get(f"/chat/conversations/{meta['conversation']}").json()["messages"]
        if msgs[-1]["status"] != "streaming":
            break
        time.sleep(0.2)
    assert msgs[-1]["status"] == "done" and "You said: go on" in msgs[-1]["content"]
    # and it can be read again from any offset (Last-Event-ID)
    again = main.http.get(f"/chat/messages/{meta['message']}/events",
                          headers={"last-event-id": "5"})
    found = events(again.text)
    assert found[0][1]["text"] == msgs[-1]["content"][5:]
    assert found[-1] == ("end", {"status": "done", "view": None})


def test_stop_keeps_the_partial_answer(main: ChatClient, up_a: Upstream) -> None:
    # a 6-s answer (60 words, 100 ms each): the stop lands inside it however starved the
    # machine (the demo's 0.4-s answer could end before the stop arrived)
    up_a.control(ms_per_token=100)
    with main.http.stream("POST", "/chat/send", json={"model": "m", "content": "stop me"},
                          headers={"x-csrf-token": main.csrf}) as s:
        got = ""
        stopped = False
        for chunk in s.iter_text():
            got += chunk
            if not stopped and "event: delta" in got:
                meta = events(got)[0][1]
                r = main.http.post(f"/chat/messages/{meta['message']}/stop",
                                   headers={"x-csrf-token": main.csrf})
                assert r.json() == {"ok": True, "running": True}
                stopped = True
    found = events(got)
    assert found[-1][1]["status"] == "stopped"
    text = "".join(d["text"] for n, d in found if n == "delta")
    stored = main.http.get(f"/chat/conversations/{meta['conversation']}").json()["messages"]
    assert stored[-1]["status"] == "stopped" and stored[-1]["content"] == text
    assert text.startswith("a") and "w59" not in text  # begun, and not the whole answer


def test_too_long_a_conversation_says_start_a_new_one(main: ChatClient) -> None:
    meta, _, _ = answer_of(main.send(content="y" * 2400).text)
    refused = main.send(conversation=meta["conversation"], content="z" * (MAX_CONVERSATION - 2400))
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["view"]["action"] == "new_chat" and "too long" in body["view"]["title"]
    # nothing was stored for the refused message
    msgs = main.http.get(f"/chat/conversations/{meta['conversation']}").json()["messages"]
    assert len(msgs) == 2


def test_limit_reached_says_when_it_resets(gw: Gateway) -> None:
    tiny = ChatClient(gw, "tiny@example.com")
    try:
        assert tiny.send(content="one").status_code == 200
        refused = tiny.send(content="two")
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"]["type"] == "tokens"
        view = body["view"]
        assert view["title"] == "You've reached your limit" and "{resets}" in view["next"]
        wait = int(refused.headers["retry-after"])
        assert abs(view["resets_at"] - (time.time() + wait)) < 5
        account = tiny.http.get("/account").text
        assert 'data-limit="response_tokens_per_hour"' in account and "UTC</time>" in account
    finally:
        tiny.close()


def test_free_tier_is_shed_at_capacity_with_the_real_retry_after(
        gw: Gateway, up_a: Upstream) -> None:
    free = ChatClient(gw, "free@example.com")
    assert free.data["models"] == ["busy", "demo"]  # [tiers.free] models, in serving order
    refused_model = free.send(model="m", content="x")
    assert refused_model.status_code == 404
    up_a.control(ms_per_token=300)
    hog = open_stream(gw, "unused", model="busy")  # anonymous (require_key off) holds the slot
    try:
        shed = free.send(model="busy", content="am I in?")
        assert shed.status_code == 503
        body = shed.json()
        view = body["view"]
        assert body["error"]["code"] == "at_capacity"
        assert view["retry_after"] == int(shed.headers["retry-after"])
        assert view["next"] == f"Try again in {view['retry_after']} s; Plus and Pro are served first."
        record = gw.record(body["request_id"])
        assert record["component"] == "web" and record["error_code"] == "at_capacity"
    finally:
        hog.close()
        free.close()


def test_upstream_failure_and_a_broken_stream(main: ChatClient, up_a: Upstream) -> None:
    up_a.control(status=500, times=1)
    failed = main.send(model="m", content="are you there")
    assert failed.status_code >= 500
    view = failed.json()["view"]
    assert view["action"] == "retry" and view["status_link"] and view["request_id"]
    assert view["next"].startswith("Your message is kept")
    # the person's message is kept, the failed answer says what happened
    cid = main.http.get("/chat/conversations").json()["data"][0]["id"]
    msgs = main.http.get(f"/chat/conversations/{cid}").json()["messages"]
    assert msgs[0]["content"] == "are you there" and msgs[-1]["status"] == "error"
    assert msgs[-1]["view"]["code"] == view["code"]
    # retry replaces the failed answer; then the stream breaks mid-answer
    up_a.control(fail_after_chunks=2)
    broken = main.send(model="m", conversation=cid, regenerate=True)
    _, text, end = answer_of(broken.text)
    assert end["status"] == "incomplete" and end["view"]["code"] == "stream_broken"
    assert end["view"]["action"] == "retry" and text
    msgs = main.http.get(f"/chat/conversations/{cid}").json()["messages"]
    assert [m["status"] for m in msgs] == ["done", "incomplete"] and msgs[-1]["content"] == text
