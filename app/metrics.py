"""Prometheus metrics counted where things happen, in the process where they happen: the API's
at ``GET /metrics``, a worker's on its own port (``FOLEY_WORKER_METRICS_PORT``). What the
database knows (jobs by status, the queue, slots in use, tenants' spend and budgets) is read at
scrape time instead, once per ``FOLEY_METRICS_REFRESH_INTERVAL`` (app.telemetry.gauges).

Labels are bounded by the code: models (the catalog), statuses, fal operations and outcome
classes; nothing per job or per request. The only per-tenant series are the database gauges
(one per tenant with a budget or spend this month), so their count follows the tenants'.

Cheap on a job's way: an observation is a label lookup and an add under a lock, a few per job
step; a step's whole instrumentation (these, its log context, the no-op span when traces are off)
measured ~30 µs on a busy 2-core machine, against the lifecycle's CPU budget of 25 ms per job.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- the API ----------------------------------------------------------------------------------

WEBHOOKS_RECEIVED = Counter(
    "foley_fal_webhooks_total", "Verified fal webhooks received, by outcome.", ["outcome"]
)
WEBHOOKS_REJECTED = Counter(
    "foley_fal_webhooks_rejected_total",
    "fal webhooks refused (401: forged, replayed or tampered; 503: fal's keys unavailable), by "
    "reason.",
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
JOBS_CREATED = Counter("foley_jobs_created_total", "Jobs accepted (202), by model.", ["model"])

# --- jobs (wherever their transitions are written: workers, and the API for cancels) ----------

JOBS_FINISHED = Counter(
    "foley_jobs_finished_total",
    "Jobs that reached a final status, by model and status (counted where the final transition "
    "is written).",
    ["model", "status"],
)
SUBMIT_LATENCY = Histogram(
    "foley_job_submit_latency_seconds",
    "From a job's accept to fal accepting its request (observed at the submit), by model.",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)

# --- the workers ------------------------------------------------------------------------------

FAL_REQUESTS = Histogram(
    "foley_fal_request_duration_seconds",
    "Calls to fal, each attempt (to the response's headers), by operation and outcome: the "
    "status class (2xx, 4xx, 5xx), 429, timeout_error or transport_error.",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STEPS = Counter("foley_worker_steps_total", "Job steps a worker ran.")
STEPS_RUNNING = Gauge("foley_worker_steps_running", "Job steps running in this worker now.")
STEP_SLOTS = Gauge(
    "foley_worker_step_slots", "Job steps this worker runs at once at most (its concurrency)."
)
DELIVERY_ATTEMPTS = Counter(
    "foley_tenant_webhook_attempts_total",
    "Attempts to deliver a webhook to a tenant, by what they made of the delivery: succeeded, "
    "retrying (it is tried again later) or failed (no attempt left, or 410 Gone).",
    ["outcome"],
)
DELIVERY_DURATION = Histogram(
    "foley_tenant_webhook_attempt_duration_seconds",
    "How long tenants' receivers took to answer a delivery attempt.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def fal_outcome(status_code: int) -> str:
    """A response's outcome label: its status class, 429 apart (fal's rate limit)."""
    if status_code == 429:
        return "429"
    return f"{status_code // 100}xx"
