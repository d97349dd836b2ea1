"""Where stored responses live: the affinity record, follow-ups pinned to their backend, and
every refusal of the stored-response stage — on the in-process state layer."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.context import Outcome, RequestContext
from gatehouse.errors import GatehouseError
from gatehouse.identity.principal import Principal
from gatehouse.state.memory import MemoryState
from gatehouse.upstream.affinity import (
    HISTORY_NOTE,
    PATH_NOTE,
    PIN_NOTE,
    Affinity,
    StoredResponseStage,
    pin_follow_up,
    stored_methods,
)
from gatehouse.upstream.breaker import BreakerPolicy, CircuitBreaker
from gatehouse.upstream.router import ModelRoute, Router, Target


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def router(*backends: str) -> Router:
    targets = [Target(Named(b), CircuitBreaker(BreakerPolicy.never()), "m", 1.0,  # type: ignore[arg-type]
                      api="responses") for b in backends]
    return Router({"r": ModelRoute("r", targets, "x", 0)})


def ctx(org: str, method: str = "POST", path: str = "/v1/responses", query: bytes = b"",
        **body: Any) -> RequestContext:
    c = RequestContext("req_1", method, path, {}, None, query=query)
    c.principal = Principal("key", "default", org_id=org)
    c.body, c.model = {"model": "r", **body}, "r"
    return c


async def test_a_follow_up_is_pinned_to_the_backend_holding_its_response() -> None:
    affinity = Affinity(MemoryState())
    await affinity.remember("resp_1", "b", "r", "org_a")
    mine = ctx("org_a", previous_response_id="resp_1")
    await pin_follow_up(mine, affinity, router("a", "b"))
    assert mine.notes[PIN_NOTE] == "b"
    unknown = ctx("org_a", previous_response_id="resp_2")
    await pin_follow_up(unknown, affinity, router("a", "b"))
    assert PIN_NOTE not in unknown.notes  # routed as usual; the backend says what it knows
    chat_only = router("a")
    chat_only.routes["r"].targets[0].api = "chat"  # keeps nothing: only the gateway could
    with pytest.raises(GatehouseError) as caught:
        await pin_follow_up(ctx("org_a", previous_response_id="resp_2"), affinity, chat_only)
    assert caught.value.code == "previous_response_not_found"
    kept = {"id": "resp_k", "output": [{"type": "message", "role": "assistant",
                                        "content": [{"type": "output_text", "text": "hi"}]}]}
    assert await affinity.keep(kept, [{"role": "user", "content": "yo"}], "r", "org_a")
    follow = ctx("org_a", previous_response_id="resp_k")
    await pin_follow_up(follow, affinity, chat_only)
    assert follow.notes[HISTORY_NOTE] == [{"role": "user", "content": "yo"}, *kept["output"]]
    assert not await affinity.keep({**kept, "id": "resp_big"}, ["x" * (1 << 20)], "r", None)
    for who, routes, code in (("org_b", router("a", "b"), "previous_response_not_found"),
                              ("org_a", router("a"), "response_backend_gone")):
        with pytest.raises(GatehouseError) as caught:
            await pin_follow_up(ctx(who, previous_response_id="resp_1"), affinity, routes)
        assert (caught.value.code, caught.value.param) == (code, "previous_response_id")


async def test_the_stored_response_stage_finds_refuses_and_forgets() -> None:
    affinity = Affinity(MemoryState())
    await affinity.remember("resp_1", "b", "r", "org_a")
    stage = StoredResponseStage(affinity, router("a", "b"))
    items = ctx("org_a", "GET", "/v1/responses/resp_1/input_items", b"limit=5&order=asc")
    await stage.enter(items)
    assert (items.model, items.body, items.notes[PIN_NOTE], items.notes[PATH_NOTE]) == (
        "r", {}, "b", "/responses/resp_1/input_items?limit=5&order=asc")
    for c, status, code, param in (
            (ctx("org_a", "GET", "/v1/responses/resp_<1>"), 400, "invalid_value", "response_id"),
            (ctx("org_a", "GET", "/v1/responses/resp_1", b"a=<b>"), 400, "invalid_value",
             "query"),
            (ctx("org_a", "GET", "/v1/responses/resp_9"), 404, "response_not_found",
             "response_id"),
            (ctx("org_b", "GET", "/v1/responses/resp_1"), 404, "response_not_found",
             "response_id"),
            (ctx("org_a", "GET", "/v1/responses/resp_1/other"), 404, "unknown_url", None)):
        with pytest.raises(GatehouseError) as caught:
            await stage.enter(c)
        assert (caught.value.status, caught.value.code, caught.value.param) == (
            status, code, param)
    gone = StoredResponseStage(affinity, router("a"))
    with pytest.raises(GatehouseError) as caught:
        await gone.enter(ctx("org_a", "DELETE", "/v1/responses/resp_1"))
    assert caught.value.code == "response_backend_gone"
    deleting = ctx("org_a", "DELETE", "/v1/responses/resp_1")
    await stage.enter(deleting)
    await stage.exit(deleting, Outcome("ok", 200))
    assert await affinity.find("resp_1") is None
    assert stored_methods("/v1/responses/x") == ("GET", "DELETE")
    assert stored_methods("/v1/responses/x/input_items") == ("GET",)


async def test_remembering_nothing_when_keep_days_is_zero(gateway_client: Any) -> None:
    gw = await gateway_client(storage={"responses_keep_days": 0})
    made = await gw.post("/v1/responses", json={"model": "demo", "input": "hi"})
    assert made.status_code == 200 and made.json()["store"] is False
    follow = await gw.post("/v1/responses", json={"model": "demo", "input": "more",
                                                  "previous_response_id": made.json()["id"]})
    assert (follow.status_code, follow.json()["error"]["param"]) == (400,
                                                                    "previous_response_id")
    read = await gw.get(f"/v1/responses/{made.json()['id']}")
    assert (read.status_code, read.json()["error"]["code"]) == (404, "unknown_url")
