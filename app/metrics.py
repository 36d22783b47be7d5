"""Prometheus metrics, served at /metrics by the API process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WEBHOOKS_RECEIVED = Counter(
    "foley_fal_webhooks_total", "Verified fal webhooks received, by outcome.", ["outcome"]
)
WEBHOOKS_REJECTED = Counter(
    "foley_fal_webhooks_rejected_total",
    "fal webhooks refused (401: forged, replayed or tampered), by reason.",
    ["reason"],
)
ADMIN_AUTH_FAILURES = Counter(
    "foley_admin_auth_failures_total",
    "Admin API requests refused for a missing or wrong admin token.",
    ["reason"],
)
JOB_WAITERS = Gauge(
    "foley_job_waiters",
    "Event streams and held Prefer: wait requests waiting on a job's news in this API process.",
)
