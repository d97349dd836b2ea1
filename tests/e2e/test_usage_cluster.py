"""Two real ``gatehouse serve`` processes on one PostgreSQL and one Redis: requests spread over
both (the official openai SDK as the client) are counted exactly once — by the health view,
by the usage API (from the rollups and from the usage history) — and compacting both
processes' minute rows into hours, by two compactors at once, keeps every count exactly once.
The usage API's 4xx answers reach the SDK as its own error classes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from gatehouse.store.db import Store
from gatehouse.store.rollups import RollupRows
from gatehouse.store.tables import RollupHour, RollupMinute
from gatehouse.telemetry.compaction import Compactor, Retention
from tests.e2e.conftest import upstream_cfg
from tests.e2e.test_identity import cli, pg_database  # noqa: F401  (the fixture)
from tests.support.procs import ADMIN_TIMEOUT, Gateway, Upstream, write_toml
from tests.support.services import REDIS_URL

pytestmark = pytest.mark.e2e

HELLO: list[Any] = [{"role": "user", "content": "hello"}]
USAGE = "/organization/usage/completions"


@pytest.fixture
def two(tmp_path: Path, pg_database: str, up_a: Upstream,  # noqa: F811
        start_gateway: Callable[..., Gateway]) -> Iterator[tuple[Path, str, Gateway, Gateway]]:
    config: dict[str, Any] = {
        "storage": {"database_url": pg_database, "state_url": REDIS_URL},
        "identity": {"require_key": True, "secret": "e2e-usage-secret-" + "x" * 30},
        "telemetry": {"access_log": False, "request_log": False},
        "upstreams": {"a": upstream_cfg(up_a, breaker_failures=1000)},
        "models": {"m": {"backends": [{"upstream": "a", "model": "test-model"}]}},
    }
    path = tmp_path / "cluster.toml"
    write_toml(path, config)
    cli(path, "migrate")
    yield (path, pg_database, start_gateway(config, start_timeout=60),
           start_gateway(config, start_timeout=60))


def admin_get(gw: Gateway, admin: str, path: str) -> Any:
    r = httpx.get(gw.url + path, headers={"authorization": f"Bearer {admin}"},
                  timeout=ADMIN_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


async def compact_as_two_replicas(url: str) -> tuple[int, int, int, int]:
    """Two compactors (two engines, like two replicas) at once, with a clock two hours on so
    the current hour counts as closed; then the requests in hour rows, in minute rows not
    compacted, in all minute rows, and in hour rows of model ``m``."""
    stores = [Store(url), Store(url)]
    later = time.time() + 7200
    try:
        replicas = [Compactor(RollupRows(s), Retention(), clock=lambda: later, batch=3)
                    for s in stores]
        for _ in range(40):
            done = await asyncio.gather(*(c.compact() for c in replicas))
            if all(d["minute"] == 0 for d in done):
                break
        async with stores[0].session() as s:
            hours = await s.scalar(select(func.sum(RollupHour.requests)))
            fresh = await s.scalar(select(func.sum(RollupMinute.requests))
                                   .where(RollupMinute.compacted.is_(False)))
            minutes = await s.scalar(select(func.sum(RollupMinute.requests)))
            of_m = await s.scalar(select(func.sum(RollupHour.requests))
                                  .where(RollupHour.model == "m"))
        return int(hours or 0), int(fresh or 0), int(minutes or 0), int(of_m or 0)
    finally:
        for s in stores:
            await s.aclose()


def test_two_processes_count_each_request_once(
        two: tuple[Path, str, Gateway, Gateway], up_a: Upstream) -> None:
    path, url, one, other = two
    admin = cli(path, "keys", "create", "--admin").strip()
    cli(path, "orgs", "create", "acme")
    cli(path, "projects", "create", "acme/app")
    key = cli(path, "keys", "create", "acme/app").strip()
    start = int(time.time())

    ok = prompt = completion = 0
    clients = [openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
               for gw in (one, other)]
    for n in range(16):
        done = clients[n % 2].chat.completions.create(model="m", messages=HELLO)
        assert done.usage is not None
        ok += 1
        prompt += done.usage.prompt_tokens
        completion += done.usage.completion_tokens
    up_a.control(status=500, times=2)
    for n in range(2):
        with pytest.raises(openai.InternalServerError):
            clients[n % 2].chat.completions.create(model="m", messages=HELLO)
    for n in range(3):
        with pytest.raises(openai.BadRequestError):
            clients[n % 2].chat.completions.create(model="m", messages=HELLO, max_tokens=-1)
    sent = ok + 2 + 3

    deadline = time.monotonic() + 40  # each process writes its rollups every 10 s
    while True:
        view = admin_get(one, admin, "/admin/v1/health?org=acme&window=15m")
        if view["requests"] >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert view["requests"] == sent
    classes = {c: v["count"] for c, v in view["error_classes"].items() if v["count"]}
    assert classes == {"ok": ok, "server_error": 2, "client_error": 3}
    assert view["tokens"] == {"prompt": prompt, "completion": completion,
                              "total": prompt + completion}
    assert admin_get(other, admin, "/admin/v1/health?org=acme&window=15m")["requests"] == sent

    # the usage API, as a tool reading OpenAI's would: raw HTTP through the SDK
    sdk = clients[1]
    for width in ("1m", "1h", "1d"):
        page = sdk.get(USAGE, cast_to=httpx.Response, options={"params": {
            "start_time": start - 60, "bucket_width": width, "group_by": "model"}}).json()
        results = [r for b in page["data"] for r in b["results"]]
        assert {r["model"] for r in results} == {"m"}, width
        assert sum(r["num_model_requests"] for r in results) == ok, width
        assert sum(r["input_tokens"] for r in results) == prompt, width
        assert sum(r["output_tokens"] for r in results) == completion, width
    deadline = time.monotonic() + 20  # the usage history is written every 5 s
    while True:
        page = sdk.get(USAGE, cast_to=httpx.Response, options={"params": {
            "start_time": start, "group_by": "api_key_id"}}).json()
        results = [r for b in page["data"] for r in b["results"]]
        if sum(r["num_model_requests"] for r in results) >= ok or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    [result] = results
    assert result["api_key_id"].startswith("key_")
    assert (result["num_model_requests"], result["input_tokens"], result["output_tokens"]) == (
        ok, prompt, completion)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.get(USAGE, cast_to=httpx.Response, options={"params": {
            "start_time": start, "bucket_width": "1m", "group_by": "api_key_id"}})
    assert refused.value.param == "group_by" and "bucket_width=1d" in refused.value.message
    with pytest.raises(openai.NotFoundError):
        sdk.get(USAGE, cast_to=httpx.Response, options={"params": {
            "start_time": start, "project_ids": "proj_of_someone_else"}})

    of_m = admin_get(one, admin, "/admin/v1/health?model=m&window=15m")["requests"]
    assert of_m == ok + 2  # the 400s were refused before the model was read
    hours, fresh, minutes, hours_of_m = asyncio.run(compact_as_two_replicas(url))
    # every minute row folded, once (the health and usage reads above are requests too)
    assert (hours, fresh) == (minutes, 0) and hours_of_m == of_m
    after = admin_get(one, admin, "/admin/v1/health?model=m&window=15m")
    assert after["requests"] == of_m and after["tokens"] == view["tokens"]
    for c in clients:
        c.close()
