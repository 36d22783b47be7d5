"""The events a tenant can be told about, and how a job's ``webhook_events_filter`` maps to them."""

from __future__ import annotations

# The job events delivered (job.created and job.submitting never are: nothing has happened at
# fal yet). The outbox trigger of migration 0009 spells the same list.
JOB_EVENT_TYPES: dict[str, str] = {
    "job.started": "fal accepted the job: it is in fal's queue (status starting).",
    "job.processing": "The job is running at fal (status processing).",
    "job.logs": "New log lines from the model (at most one event per 500 ms per job and "
    "receiver: the job's `logs` then holds every line so far).",
    "job.succeeded": "The job succeeded: its `result` holds the gateway's copies of the outputs.",
    "job.failed": "The job failed: its `error` says why.",
    "job.canceled": "The job was canceled.",
    "job.aborted": "The job's Cancel-After deadline passed before it started at fal (not billed).",
}
BUDGET_EVENT_TYPES: dict[str, str] = {
    "budget.threshold_crossed": "The tenant's spend crossed one of its budget thresholds "
    "(50/80/100 % by default) in the current period; each is sent once per period.",
}
PING = "ping"
EVENT_TYPES: dict[str, str] = {**JOB_EVENT_TYPES, **BUDGET_EVENT_TYPES}
TERMINAL_JOB_EVENTS = ("job.succeeded", "job.failed", "job.canceled", "job.aborted")

# Replicate's webhook_events_filter words → our event types.
JOB_FILTERS: dict[str, tuple[str, ...]] = {
    "start": ("job.started", "job.processing"),
    "logs": ("job.logs",),
    # The outputs exist once, when the job succeeds (they are not streamed).
    "output": ("job.succeeded",),
    "completed": TERMINAL_JOB_EVENTS,
}
DEFAULT_JOB_FILTER = ("completed",)
FILTER_DESCRIPTION = (
    "Which of this job's events its `webhook` receives (Replicate's words): `start` → "
    "job.started and job.processing, `logs` → job.logs (at most one per 500 ms), `output` → "
    "job.succeeded (outputs arrive once, at the end), `completed` → job.succeeded, job.failed, "
    'job.canceled and job.aborted. Default `["completed"]`.'
)


def job_webhook_events(filters: list[str] | tuple[str, ...]) -> list[str]:
    """The event types a job's webhook asked for, in a stable order."""
    wanted = {kind for word in filters for kind in JOB_FILTERS[word]}
    return [kind for kind in JOB_EVENT_TYPES if kind in wanted]
