"""The gatehouse client: the retry policy, its budget, client request ids and typed errors.

``classify`` tells what an answer means (ok, rate limited, quota, at capacity, 1020, …) for any
OpenAI-compatible service; docs/client.md has the policy table.
"""

from gatehouse.client.outcome import Answer, Outcome, classify, retry_after

__all__ = ["Answer", "Outcome", "classify", "retry_after"]
