"""Falling back: a job that names several models (``"model": [...]`` or ``"auto"``) moves on to
the next when the one it is on cannot do it, for a reason that is not the input's fault.

* **Before anything is sent** (nothing billed): the probed video breaks the model's limits
  (length, container, size), or the model's estimate does not fit the tenant's budget.
* **After fal ran it**: a runner error (5xx) or a start timeout; fal's bill for that request is
  settled at once (its attempt shows the cost), the reservation moves on to the next model.
* **When fal refused it** for the account (locked): nothing was created, nothing billed.

Never after an ambiguous submit (the request may still run: a second one would be a second paid
request by our doing), never once a cancel was asked, never for the input's fault (fal's 422,
an unreadable video), and at most ``Policy.max_attempts`` models per job. The job keeps every
attempt it left behind (``attempts``: model, request, error, cost)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.jobs.lifecycle.endings import error_of
from app.jobs.lifecycle.transitions import JobLike, Policy, SettleRequest, Transition, Wake
from app.models.job import JobStatus, SubmitState
from app.usage.billing import Outcome

# Failures at fal that are the model's, not the input's.
UPSTREAM_CODES = frozenset(
    {"upstream_runner_error", "upstream_start_timeout", "upstream_account_locked"}
)
# What the preflight and the budget refuse about a model that another model may take.
BEFORE_SEND_CODES = frozenset(
    {
        "video_too_long",
        "video_too_short",
        "video_too_large",
        "unsupported_container",
        "budget_exceeded",
    }
)


def next_candidate(job: JobLike, policy: Policy) -> dict[str, Any] | None:
    """The model the job moves on to, or None (it named one model, or none is left to try)."""
    candidates = job.candidates or []
    tried = len(job.attempts or []) + 1  # the one it is on counts
    if tried >= min(len(candidates), policy.max_attempts):
        return None
    return candidates[tried]


def fall_back(
    job: JobLike,
    now: datetime,
    policy: Policy,
    *,
    error: dict[str, Any],
    billed: Outcome | None = None,
    changes: dict[str, Any] | None = None,
    before: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> Transition | None:
    """The job moved on to its next model (queued again, as if new), or None when it cannot:
    then the failure ends the job as before. ``billed``: how the request fal ran ended (None:
    none was created)."""
    if job.cancel_requested_at is not None or job.submit_state is SubmitState.ambiguous:
        return None
    following = next_candidate(job, policy)
    if following is None:
        return None
    request_id = job.upstream_request_id
    attempt = {
        "model": job.model,
        "endpoint": job.endpoint,
        "request_id": request_id,
        "error": error,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": now.isoformat(),
        "cost_usd": None,  # set by the store when the request is settled
    }
    out = dict(changes or {})
    out.update(
        model=following["model"],
        endpoint=following["endpoint"],
        upstream_payload=following["upstream_payload"],
        attempts=[*(job.attempts or []), attempt],
        status=JobStatus.queued,
        submit_state=SubmitState.pending,
        submit_attempts=0,
        upstream_request_id=None,
        status_url=None,
        response_url=None,
        cancel_url=None,
        queue_position=None,
        upstream_completed=False,
        upstream_output=None,
        submitted_at=None,
        started_at=None,
        inference_s=None,
        poll_count=0,
        # measured again against the next model's limits, re-priced at its price
        input_probe=None,
        # a result-cache key names the model: the next model's is made by its own preflight
        cache_key=None,
    )
    settle = None
    if request_id is not None and billed is not None:
        settle = SettleRequest(request_id, billed)
    data = {"from": job.model, "to": following["model"], "request_id": request_id, "error": error}
    return Transition(
        changes=out,
        next_action_at=now,
        events=(*before, ("job.fallback", data)),
        settle_request=settle,
        wake=Wake.QUEUED,
    )


def fall_back_or(
    job: JobLike,
    now: datetime,
    policy: Policy,
    ending: Transition,
    *,
    code: str,
    message: str,
    upstream: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    billed: Outcome | None = None,
    changes: dict[str, Any] | None = None,
    before: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> Transition:
    """``ending`` (the job's failure), unless the failure lets it fall back: one the next model
    may not meet, while no request of the job can still exist at fal (nothing sent yet, or the
    request it sent has ended there, or fal refused it without creating one)."""
    if code in BEFORE_SEND_CODES:
        nothing_at_fal = job.submit_state is SubmitState.pending
    elif code in UPSTREAM_CODES:
        ended_there = billed is not None and job.submit_state is SubmitState.submitted
        refused = billed is None and job.submit_state in (SubmitState.pending, SubmitState.sending)
        nothing_at_fal = ended_there or refused
    else:
        return ending
    if not nothing_at_fal:
        return ending
    moved = fall_back(
        job,
        now,
        policy,
        error=error_of(code, message, upstream, details=details),
        billed=billed,
        changes=changes,
        before=before,
    )
    return ending if moved is None else moved
