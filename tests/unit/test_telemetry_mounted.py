"""The mounted apps' recorder on its own: an answer, an app that fails, a client that leaves
before the answer, and endpoints kept to a bounded set."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatehouse.telemetry.metrics import Metrics
from gatehouse.telemetry.mounted import Recorded, endpoint_of
from gatehouse.telemetry.record import AccessLog, RequestRecord
from gatehouse.telemetry.stage import TelemetryStage


class Sink(TelemetryStage):
    def __init__(self) -> None:
        super().__init__(Metrics(), AccessLog(enabled=False))
        self.records: list[RequestRecord] = []

    def write(self, record: RequestRecord) -> None:
        self.records.append(record)


def scope(path: str = "/account", **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "client": ("10.0.0.9", 1),
            "headers": [(b"x-client-request-id", b"mine-1")],
            "state": {"request_id": "req_given"}, **extra}


async def call(app: Any, sc: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(sc, receive, send)


async def test_an_answer_and_a_failing_app() -> None:
    sink = Sink()

    async def page(sc: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body",
                    "body": b'{"error":{"type":"invalid_request_error","code":"missing_api_key",'
                            b'"message":"x","param":null}}'})

    await call(Recorded(page, sink, "admin"), scope("/admin/v1/orgs"), [])
    (rec,) = sink.records
    assert (rec.request_id, rec.client_request_id, rec.component, rec.status) == (
        "req_given", "mine-1", "admin", 401)
    assert (rec.error_class, rec.error_code, rec.endpoint) == ("auth", "missing_api_key",
                                                               "admin")

    async def broken(sc: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        await call(Recorded(broken, sink, "web"), scope(), [])
    assert (sink.records[-1].status, sink.records[-1].error_class) == (500, "server_error")


async def test_a_client_that_leaves_before_the_answer() -> None:
    sink = Sink()

    async def slow(sc: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        raise asyncio.CancelledError  # as a server cancels an app whose client left

    with pytest.raises(asyncio.CancelledError):
        await call(Recorded(slow, sink, "web"), scope(),
                   [{"type": "http.request", "body": b"", "more_body": False}])
    (rec,) = sink.records
    assert (rec.status, rec.outcome, rec.error_class) == (499, "client_disconnected",
                                                          "client_gone")


def test_endpoints_are_route_templates_or_the_first_segment() -> None:
    routed = scope("/admin/v1/orgs/acme/keys/key_1", route=object(),
                   path_params={"org": "acme", "key": "key_1"})
    assert endpoint_of(routed) == "admin/v1/orgs/{org}/keys/{key}"
    assert endpoint_of(scope("/admin/v1/orgs/anything-at-all")) == "admin"
    assert endpoint_of(scope("/login", route=object(), path_params={})) == "login"
