"""Stored responses across replicas: two gateways sharing Redis, two Responses backends (the
test upstream with ``--responses``) of equal weight, so a follow-up that went to a random one
would fail half the time. ``previous_response_id``, ``GET``/``DELETE /v1/responses/{id}`` and
``input_items`` from either replica reach the backend holding the response; a third gateway
whose model no longer has that backend says so. The official SDK throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from tests.e2e.conftest import upstream_cfg
from tests.e2e.test_responses import streamed
from tests.support.procs import Gateway, Upstream
from tests.support.services import REDIS_URL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateways(proc_dir: Path) -> Iterator[list[Gateway]]:
    ups = [Upstream(name, proc_dir, responses=True) for name in ("x", "y")]
    upstreams = {up.name: upstream_cfg(up, api="responses") for up in ups}
    both = {"backends": [{"upstream": "x"}, {"upstream": "y"}]}
    config: dict[str, Any] = {"storage": {"state_url": REDIS_URL}, "upstreams": upstreams}
    started = [Gateway(proc_dir, {**config, "models": {"r": both,
                                                       "rx": {"backends": [{"upstream": "x"}]}}})
               for _ in range(2)]
    started.append(Gateway(proc_dir, {**config, "models": {"r": both, "rx": {
        "backends": [{"upstream": "y"}]}}}))  # x no longer serves rx here
    yield started
    for gw in started:
        gw.stop()
    for up in ups:
        up.stop()


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)


def test_follow_ups_reach_the_backend_holding_the_response_from_any_replica(
        gateways: list[Gateway]) -> None:
    one, two, _ = (sdk(gw) for gw in gateways)
    first = one.responses.create(model="r", input="hello")
    holder = first.output_text.split()[0]
    assert first.output_text == f"{holder} saw 1 messages"
    previous, seen = first.id, 1
    for client in (two, one, two, one):
        answer = client.responses.create(model="r", input="and then?",
                                         previous_response_id=previous)
        seen += 2  # the earlier answer and this input
        assert answer.output_text == f"{holder} saw {seen} messages"
        previous = answer.id
    events = streamed(two, model="r", input="streamed", previous_response_id=previous)
    done = events[-1].response
    assert done.output_text == f"{holder} saw {seen + 2} messages" and done.store is True
    last = one.responses.create(model="r", input="last", previous_response_id=done.id)
    assert last.output_text == f"{holder} saw {seen + 4} messages"


def test_get_input_items_and_delete_on_another_replica(gateways: list[Gateway]) -> None:
    one, two, _ = (sdk(gw) for gw in gateways)
    made = one.responses.create(model="r", input="keep this", instructions="Be brief.")
    raw = two.responses.with_raw_response.retrieve(made.id)
    found = Response.model_validate(json.loads(raw.text))
    assert (found.id, found.output_text) == (made.id, made.output_text)
    assert raw.headers["x-request-id"].startswith("req_")
    items = two.responses.input_items.list(made.id)
    assert [item.role for item in items.data] == ["user"]
    deleted = one.responses.delete(made.id)
    assert deleted is None  # the SDK returns nothing for a 200 delete
    for client in (one, two):
        with pytest.raises(openai.NotFoundError) as caught:
            client.responses.retrieve(made.id)
        assert caught.value.code == "response_not_found"


def test_a_backend_gone_from_the_model_is_a_clear_400(gateways: list[Gateway]) -> None:
    one, _, three = (sdk(gw) for gw in gateways)
    made = one.responses.create(model="rx", input="on x")
    assert made.output_text.startswith("x ")
    with pytest.raises(openai.BadRequestError) as caught:
        three.responses.create(model="rx", input="more", previous_response_id=made.id)
    assert (caught.value.code, caught.value.param) == ("response_backend_gone",
                                                       "previous_response_id")
    assert "'x'" in caught.value.message and "rx" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        three.responses.retrieve(made.id)
    assert caught.value.code == "response_backend_gone"


def test_unstored_and_unknown_responses_are_not_found(gateways: list[Gateway]) -> None:
    one, two, _ = (sdk(gw) for gw in gateways)
    unstored = one.responses.create(model="rx", input="forget me", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError) as caught:
        two.responses.retrieve(unstored.id)
    assert caught.value.code == "response_not_found"
    # not known to the gateway: routed as usual, and the backend's own 404 is passed on
    with pytest.raises(openai.NotFoundError) as caught:
        two.responses.create(model="rx", input="?", previous_response_id=unstored.id)
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        two.responses.retrieve("resp_<bad>")
    assert caught.value.param == "response_id"
    with pytest.raises(openai.APIStatusError) as status:
        two.post(f"/responses/{unstored.id}", cast_to=object, body={})
    assert status.value.status_code == 405
    assert status.value.response.headers["allow"] == "GET, DELETE"
