"""Prometheus metrics, kept in the app's own registry (several apps may share a process).

With several workers (``gatehouse serve --workers N``) each worker writes its values to files in
``$PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` on any worker reports the sum over all of them."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gatehouse.telemetry.genai import GenAIMetrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gatehouse_requests", "Requests answered, by outcome.",
                                ["endpoint", "model", "status", "outcome"], registry=r)
        self.latency = Histogram("gatehouse_request_duration_seconds",
                                 "Time from request to last byte.", ["endpoint", "model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram("gatehouse_time_to_first_byte_seconds",
                              "Time from request to the upstream's first byte.", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("gatehouse_tokens", "Tokens metered from upstream usage.",
                              ["model", "kind"], registry=r)
        self.inflight = Gauge("gatehouse_inflight_requests",
                              "Requests entered and not yet finished (streams included).",
                              registry=r, multiprocess_mode="livesum")
        self.attempts = Counter("gatehouse_upstream_attempts",
                                "Calls to backends, by result.", ["backend", "result"],
                                registry=r)
        self.breaker_open = Gauge("gatehouse_upstream_circuit_open",
                                  "1 while the circuit of a backend's model is open or "
                                  "half-open.", ["backend", "model"], registry=r,
                                  multiprocess_mode="livemax")

        self.auth = Counter("gatehouse_auth", "Identity checks, by how they ended.",
                            ["result"], registry=r)
        self.identity_stale = Counter(
            "gatehouse_identity_stale", "Requests identified from an expired cache entry (key "
            "or signed-in user) because the store could not be reached.", registry=r)
        self.quota_decisions = Counter("gatehouse_quota_decisions",
                                       "Quota checks, by result.", ["result"], registry=r)
        self.admission = Counter("gatehouse_admission",
                                 "Admission decisions: admitted, or shed (queue_full, deadline).",
                                 ["model", "priority", "result"], registry=r)
        self.queue_wait = Histogram("gatehouse_admission_wait_seconds",
                                    "Time admitted requests waited for a slot.",
                                    ["model", "priority"], registry=r,
                                    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        self.queue_depth = Gauge("gatehouse_admission_queue_depth",
                                 "Requests waiting for a slot.", ["model", "priority"],
                                 registry=r, multiprocess_mode="livesum")
        self.concurrency_limit = Gauge("gatehouse_admission_concurrency_limit",
                                       "The adaptive concurrency limit of a model.",
                                       ["model"], registry=r, multiprocess_mode="livesum")
        self.edge_blocks = Counter("gatehouse_edge_blocks",
                                   "Requests refused by the edge (403 1020), by rule and reason "
                                   "(rule, ban).", ["rule", "reason"], registry=r)
        self.edge_bans = Counter("gatehouse_edge_bans",
                                 "Bans the abuse detector of this replica made, by what tripped "
                                 "it (requests, network, unauthorized, challenge_failed).",
                                 ["cause"], registry=r)
        self.edge_rays_dropped = Counter("gatehouse_edge_rays_dropped",
                                         "Ray events not stored (buffer full or store down).",
                                         registry=r)
        self.edge_rules = Gauge("gatehouse_edge_rules", "Firewall rules loaded (list files "
                                "count as one rule each).", registry=r,
                                multiprocess_mode="livemax")
        self.store_queries = Counter("gatehouse_store_queries",
                                     "SQL statements sent to the store.", registry=r)
        self.challenges = Counter("gatehouse_edge_challenges",
                                  "Human checks by rule: issued (page or json), solved, failed "
                                  "(by reason).", ["rule", "result", "reason"], registry=r)
        self.connections_open = Gauge("gatehouse_edge_connections_open",
                                      "Client connections open.", registry=r,
                                      multiprocess_mode="livesum")
        self.connections_closed = Counter(
            "gatehouse_edge_connections_closed",
            "Client connections refused or cut by the connection layer, by reason "
            "(per_address, server_full, evicted, head_too_large, uri_too_long, invalid_http, "
            "upgrade_with_body, body_too_large, head_timeout, body_timeout, idle_timeout, "
            "send_timeout).",
            ["reason"], registry=r)

        self.request_log_written = Counter("gatehouse_request_log_written",
                                           "Request records written to the request log.",
                                           registry=r)
        self.request_log_sampled = Counter("gatehouse_request_log_sampled",
                                           "Successful requests not written to the request "
                                           "log because of sampling above "
                                           "request_log_sample_above.", registry=r)
        self.request_log_flush = Histogram(
            "gatehouse_request_log_flush_seconds",
            "Time to write what waited for the request log's writer, once a second. Near a "
            "second or more, records wait that long too and the buffer fills.", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.request_log_dropped = Counter("gatehouse_request_log_dropped",
                                           "Request records lost: buffer_full (the writer "
                                           "fell behind) or store_error.", ["reason"],
                                           registry=r)

        self.rollups_dropped = Counter("gatehouse_rollups_dropped",
                                       "Requests not counted in the minute rollups: cells "
                                       "dropped while the store did not take them.",
                                       registry=r)

        # named after OpenTelemetry's GenAI conventions (genai.py), beside the gateway's own
        self.genai = GenAIMetrics(r)
        self.otlp_dropped = Counter("gatehouse_otlp_dropped",
                                    "Spans not exported over OTLP: queue_full (the exporter "
                                    "fell behind) or export_failed (the collector refused "
                                    "them or could not be reached).", ["reason"], registry=r)

    def render(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
