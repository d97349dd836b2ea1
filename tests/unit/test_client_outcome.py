"""classify(): one outcome per branch of the triage matrix, from gatehouse's and others' answers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gatehouse import errors
from gatehouse.client import Answer, Outcome, classify, retry_after


def gateway_answer(error: errors.GatehouseError) -> tuple[int, dict[str, str], bytes]:
    """What the gateway itself sends for ``error``: its status, headers and body."""
    return error.status, error.response_headers(), error.body("req_x")


@pytest.mark.parametrize("error, outcome", [
    (errors.InvalidApiKey("bad key"), Outcome.UNAUTHORIZED),
    (errors.SessionExpired("gone"), Outcome.UNAUTHORIZED),
    (errors.AccessDenied("denied", ray_id="8a1b"), Outcome.ACCESS_DENIED),
    (errors.ChallengeRequired("check", ray_id="8a1b"), Outcome.CHALLENGE),
    (errors.CookiesRequired("cookies", ray_id="8a1b"), Outcome.CHALLENGE),
    (errors.PermissionDenied("scope"), Outcome.PERMISSION_DENIED),
    (errors.RateLimited("slow", retry_after=2), Outcome.RATE_LIMITED),
    (errors.RateLimited("tpm", unit="tokens", retry_after=2), Outcome.RATE_LIMITED),
    (errors.QuotaExceeded("spent", headers={"x-should-retry": "false"}), Outcome.QUOTA_EXCEEDED),
    (errors.AtCapacity("busy", retry_after=3), Outcome.AT_CAPACITY),
    (errors.UpstreamUnavailable("down", retry_after=5), Outcome.UPSTREAM_UNAVAILABLE),
    (errors.QuotaUnavailable("redis", retry_after=2), Outcome.UPSTREAM_UNAVAILABLE),
    (errors.UpstreamTimeout("slow"), Outcome.TIMEOUT),
    (errors.UpstreamFailed("5xx"), Outcome.SERVER_ERROR),
    (errors.InternalError("bug"), Outcome.SERVER_ERROR),
    (errors.InvalidRequest("bad"), Outcome.CLIENT_ERROR),
    (errors.ModelNotFound("nope"), Outcome.CLIENT_ERROR),
    (errors.Conflict("exists"), Outcome.CLIENT_ERROR),
    (errors.RequestTooLarge("big"), Outcome.CLIENT_ERROR),
])
def test_every_gateway_error_has_its_outcome(error: errors.GatehouseError,
                                             outcome: Outcome) -> None:
    assert classify(*gateway_answer(error)) is outcome


@pytest.mark.parametrize("status, headers, body, outcome", [
    (200, {}, b'{"id": "x"}', Outcome.OK),
    (502, {}, b"<html>Bad gateway</html>", Outcome.SERVER_ERROR),
    (503, {}, b"", Outcome.UPSTREAM_UNAVAILABLE),
    # OpenAI's own answers
    (503, {}, {"error": {"message": "The engine is currently overloaded, please try again later",
                         "type": "server_error"}}, Outcome.AT_CAPACITY),
    (429, {}, {"error": {"type": "insufficient_quota", "code": "insufficient_quota",
                         "message": "You exceeded your current quota"}}, Outcome.QUOTA_EXCEEDED),
    (429, {"retry-after": "1"}, {"error": {"type": "requests", "code": "rate_limit_exceeded"}},
     Outcome.RATE_LIMITED),
    # Cloudflare in front of a service
    (403, {"cf-mitigated": "challenge"}, "<html>Just a moment...</html>", Outcome.CHALLENGE),
    (403, {"cf-ray": "8a1b2c3d-AMS"}, "<title>Access denied</title><span>Error code: 1020</span>",
     Outcome.ACCESS_DENIED),
    (403, {}, "<html>Forbidden</html>", Outcome.PERMISSION_DENIED),
    (422, {}, None, Outcome.CLIENT_ERROR),
])
def test_other_services_answers(status: int, headers: dict[str, str], body: Any,
                                outcome: Outcome) -> None:
    assert classify(status, headers, body) is outcome


def test_answer_reads_ids_codes_and_waits() -> None:
    status, headers, body = gateway_answer(errors.AccessDenied("denied", ray_id="8a1b"))
    answer = Answer.read(status, headers, body)
    assert (answer.code, answer.request_id, answer.ray_id) == ("1020", "req_x", "8a1b")
    cf = Answer.read(403, {"CF-Ray": "8a1b2c3d4e5f6789-AMS"}, "error code: 1020")
    assert cf.ray_id == "8a1b2c3d4e5f6789" and cf.outcome is Outcome.ACCESS_DENIED
    quota = Answer.read(*gateway_answer(errors.QuotaExceeded(
        "spent", headers={"x-should-retry": "false"})))
    assert quota.should_retry is False and quota.type == "insufficient_quota"
    assert Answer.read(500, {"X-Should-Retry": "TRUE"}, None).should_retry is True
    body_id = Answer.read(500, {}, orjson.dumps({"error": {}, "request_id": "req_b"}))
    assert body_id.request_id == "req_b"


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "inf"}, 86400.0),  # not "retry now": longer than anyone waits
    ({"retry-after": "1e400"}, 86400.0),
    ({"retry-after-ms": "1e400"}, 86400.0),
    ({"retry-after": "-inf"}, 0.0),
    ({"retry-after": "nan"}, None),
    ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
    ({}, None),
])
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds
