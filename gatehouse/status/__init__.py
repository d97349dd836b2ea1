"""The status page: components, the detector, incidents, the Statuspage v2 JSON, feeds and
webhooks, judged by the gateway's own traffic (docs/status.md)."""
