"""How a job ends: its final transition, its error, and whether a cancel is an abort."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.jobs.lifecycle.transitions import NOTHING, JobLike, Settle, Transition, Wake
from app.models.job import JobStatus, SubmitState
from app.usage.billing import Outcome


def error_of(
    code: str,
    message: str,
    upstream: dict[str, Any] | None = None,
    *,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "upstream": upstream}
    if details is not None:
        error["details"] = details
    return error


def upstream_error(status_code: int, error_type: str | None, detail: Any) -> dict[str, Any]:
    return {"status_code": status_code, "error_type": error_type, "detail": detail}


def finish(
    job: JobLike,
    now: datetime,
    status: JobStatus,
    *,
    error: dict[str, Any] | None = None,
    billed: Outcome | None = None,
    changes: dict[str, Any] | None = None,
    inference_s: float | None = None,
    before: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> Transition:
    """The job's final state; its usage settled (``billed``: how its fal request ended, None when
    none reached fal) and its reservation released, in the same transaction."""
    out = dict(changes or {})
    out.update(status=status, error=error, completed_at=now, queue_position=None)
    if job.started_at is None and status is JobStatus.succeeded and inference_s is not None:
        # Never seen running (a short run between two looks, or a webhook): fal's own inference
        # time is the best account of when it started.
        out["started_at"] = max(
            job.submitted_at or job.created_at, now - timedelta(seconds=inference_s)
        )
    data: dict[str, Any] = {"status": status.value}
    if error is not None:
        data["error"] = error
    return Transition(
        changes=out,
        next_action_at=None,
        events=(*before, (f"job.{status.value}", data)),
        settle=Settle(billed),
        wake=Wake.FINISHED,
    )


def by_deadline(job: JobLike) -> bool:
    """The job's cancel was its Cancel-After deadline's (not asked before it)."""
    return (
        job.cancel_after_at is not None
        and job.cancel_requested_at is not None
        and job.cancel_requested_at >= job.cancel_after_at
    )


ABORTED_MESSAGE = "Its Cancel-After deadline passed before it started running."


def canceled(
    job: JobLike, *, ran: bool, message: str, upstream: dict[str, Any] | None = None
) -> tuple[JobStatus, dict[str, Any]]:
    """How a canceled job ends: ``aborted`` (Replicate's meaning: terminated before it
    started) when its deadline canceled it and it never ran at fal, on any model it fell back
    from either, else ``canceled``."""
    if by_deadline(job) and not ran and job.started_at is None and not ran_before(job):
        return JobStatus.aborted, error_of("aborted", ABORTED_MESSAGE, upstream)
    return JobStatus.canceled, error_of("canceled", message, upstream)


def ran_before(job: JobLike) -> bool:
    """A model the job fell back from had a request at fal (it may have run, and cost)."""
    return any(attempt.get("request_id") for attempt in job.attempts or [])


def deadline_passed(job: JobLike, now: datetime) -> Transition:
    if job.cancel_after_at is None or now < job.cancel_after_at:
        return Transition(next_action_at=job.cancel_after_at or now)  # not due: nothing to do
    if job.cancel_requested_at is not None:
        return Transition(next_action_at=now)  # a cancel is under way already: it goes on
    if job.status is JobStatus.queued and job.submit_state is SubmitState.pending:
        if ran_before(job):  # a model it fell back from ran at fal: not "at no cost"
            message = "Canceled: its Cancel-After deadline passed."
            return finish(job, now, JobStatus.canceled, error=error_of("canceled", message))
        return finish(job, now, JobStatus.aborted, error=error_of("aborted", ABORTED_MESSAGE))
    return Transition(
        changes={"cancel_requested_at": now},
        next_action_at=now,
        events=(("job.cancel_requested", {"reason": "cancel_after"}),),
        wake=Wake.CANCEL,
    )


def cancel_requested(job: JobLike, now: datetime) -> Transition:
    if job.status is JobStatus.queued and job.submit_state is SubmitState.pending:
        return finish(
            job,
            now,
            JobStatus.canceled,
            error=error_of("canceled", "Canceled before it was sent upstream."),
        )
    if job.cancel_requested_at is not None:
        return NOTHING
    return Transition(
        changes={"cancel_requested_at": now},
        next_action_at=now,
        events=(("job.cancel_requested", {}),),
        wake=Wake.CANCEL,
    )
