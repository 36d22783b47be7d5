"""Prometheus metrics, served at /metrics by the API process."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS_RECEIVED = Counter(
    "foley_fal_webhooks_total", "Verified fal webhooks received, by outcome.", ["outcome"]
)
WEBHOOKS_REJECTED = Counter(
    "foley_fal_webhooks_rejected_total",
    "fal webhooks refused (401: forged, replayed or tampered), by reason.",
    ["reason"],
)
