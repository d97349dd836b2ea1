"""Quotas: limits per key, project, org, user and client network, metered in requests and
tokens, reserved before the upstream call and settled with the real usage after it."""
