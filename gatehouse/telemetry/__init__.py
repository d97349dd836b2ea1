"""Telemetry stage: request ids, one RequestRecord per request, access log, metrics."""
