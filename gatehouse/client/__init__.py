"""The gatehouse client: the retry policy, its budget, client request ids and typed errors.

``classify`` tells what an answer means (ok, rate limited, quota, at capacity, 1020, …) for any
OpenAI-compatible service; ``RetryTransport`` puts the policy under any httpx client (the
official ``openai`` SDK included); ``Client`` / ``AsyncClient`` are a small client on top.
docs/client.md has the policy table.
"""

from gatehouse.client.budget import RetryBudget
from gatehouse.client.errors import (
    AccessDenied,
    APIError,
    AtCapacity,
    AuthenticationError,
    ChallengeRequired,
    ConnectionFailed,
    InvalidRequest,
    MalformedAnswer,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServerError,
    SessionExpired,
    Timeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gatehouse.client.ids import new_client_request_id
from gatehouse.client.outcome import Answer, Outcome, classify, retry_after
from gatehouse.client.policy import Decision, RetryPolicy
from gatehouse.client.sdk import AsyncClient, Client
from gatehouse.client.transport import AsyncRetryTransport, RetryTransport, attempts_of

__all__ = [
    "APIError", "AccessDenied", "Answer", "AsyncClient", "AsyncRetryTransport", "AtCapacity",
    "AuthenticationError", "ChallengeRequired", "Client", "ConnectionFailed", "Decision",
    "InvalidRequest", "MalformedAnswer", "Outcome", "PermissionDenied", "QuotaExceeded",
    "RateLimited", "RetryBudget", "RetryPolicy", "RetryTransport", "ServerError", "SessionExpired", "Timeout",
    "UpstreamTimeout", "UpstreamUnavailable", "attempts_of", "classify", "new_client_request_id",
    "retry_after",
]
