"""The decisions: (the job as it stands, what happened) → the transition."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from app.jobs.lifecycle import events as ev
from app.jobs.lifecycle import segments
from app.jobs.lifecycle.cache_hit import cache_hit
from app.jobs.lifecycle.endings import (
    cancel_requested,
    canceled,
    deadline_passed,
    error_of,
    finish,
    upstream_error,
)
from app.jobs.lifecycle.fallback import fall_back_or
from app.jobs.lifecycle.transitions import (
    MAX_LOG_LINES,
    MAX_PREFLIGHT_TRIES,
    NOTHING,
    JobLike,
    NotApplicable,
    Policy,
    Transition,
    Wake,
)
from app.models.job import JobStatus, SubmitState
from app.upstream.schemas import ResultCancelled, ResultFailed, ResultNotFound
from app.usage.billing import Outcome, failure_kind


def decide(job: JobLike, event: ev.Event, *, now: datetime, policy: Policy) -> Transition:
    """The transition ``event`` makes of ``job``. A terminal job absorbs everything (a late
    webhook, a duplicate step), except a cancel request, which is refused. A job whose
    Cancel-After deadline is ahead is never next due after it: a worker acts on it then."""
    transition = _decide(job, event, now=now, policy=policy)
    due = transition.next_action_at
    deadline = job.cancel_after_at
    if (
        deadline is not None
        and isinstance(due, datetime)
        and due > deadline
        and job.cancel_requested_at is None
        and "cancel_requested_at" not in transition.changes
    ):
        return replace(transition, next_action_at=deadline)
    return transition


def _decide(job: JobLike, event: ev.Event, *, now: datetime, policy: Policy) -> Transition:
    if job.status.terminal:
        if isinstance(event, ev.CancelRequested):
            raise NotApplicable(f"already {job.status.value}")
        return NOTHING
    match event:
        case ev.CancelRequested():
            return cancel_requested(job, now)
        case ev.DeadlinePassed():
            return deadline_passed(job, now)
        case ev.TimedOut(limit=limit):
            return finish(
                job,
                now,
                JobStatus.failed,
                error=error_of("timeout", f"The job did not finish within {limit}."),
                billed=Outcome("unknown", job.inference_s) if job.upstream_request_id else None,
            )
        case ev.InputRejected(code=code, message=message, details=details):
            error = error_of(code, message, details=details or None)
            ending = finish(job, now, JobStatus.failed, error=error)
            return fall_back_or(
                job, now, policy, ending, code=code, message=message, details=details or None
            )
        case ev.InputUnavailable(message=message):
            tries = job.poll_count + 1
            if tries >= MAX_PREFLIGHT_TRIES:
                return finish(
                    job,
                    now,
                    JobStatus.failed,
                    error=error_of(
                        "video_unreachable", f"The input could not be fetched: {message}"
                    ),
                    changes={"poll_count": tries},
                )
            return Transition(
                changes={"poll_count": tries}, next_action_at=now + policy.backoff(tries + 2)
            )
        case ev.SubmitStarting():
            return _submit_starting(job, event, now)
        case ev.CacheHit():
            return cache_hit(job, event, now)
        case ev.BudgetRefused(code=code, message=message, details=details):
            ending = finish(
                job, now, JobStatus.failed, error=error_of(code, message, details=details)
            )
            return fall_back_or(
                job, now, policy, ending, code=code, message=message, details=details
            )
        case ev.Submitted():
            return _submitted(job, event, now, policy)
        case ev.SubmitAmbiguous(reason=reason):
            if job.submit_state is SubmitState.submitted:  # a webhook attached it meanwhile
                return Transition(next_action_at=now)
            return Transition(
                changes={"submit_state": SubmitState.ambiguous},
                next_action_at=now + _first_ambiguous_look(policy),
                events=(("job.submit_ambiguous", {"reason": reason}),),
            )
        case ev.SubmitFailed(reason=reason, retry_after_s=retry_after_s):
            if job.submit_state is not SubmitState.sending:
                return Transition(next_action_at=now)
            delay = policy.backoff(job.submit_attempts)
            if retry_after_s:
                delay = max(delay, timedelta(seconds=retry_after_s))
            return Transition(
                changes={"submit_state": SubmitState.pending},
                next_action_at=now + delay,
                events=(("job.submit_retrying", {"reason": reason}),),
            )
        case ev.SubmitRefused(code=code, message=message, upstream=upstream, created=created):
            state = SubmitState.submitted if created else job.submit_state
            if not created and state is SubmitState.sending:
                state = SubmitState.pending
            ending = finish(
                job,
                now,
                JobStatus.failed,
                error=error_of(code, message, upstream),
                changes={"submit_state": state},
            )
            if created:  # it exists at fal: its own ending, whatever it costs
                return ending
            return fall_back_or(
                job, now, policy, ending, code=code, message=message, upstream=upstream
            )
        case ev.FoundMidSend():
            if job.submit_state is not SubmitState.sending:
                return Transition(next_action_at=now)
            wait = _first_ambiguous_look(policy)
            return Transition(
                changes={"submit_state": SubmitState.ambiguous},
                next_action_at=max(now, (job.submitted_at or now) + wait),
                events=(("job.submit_ambiguous", {"reason": "a worker stopped mid-submit"}),),
            )
        case ev.AmbiguousDue():
            return _ambiguous_due(job, now, policy)
        case ev.Attached(request_id=request_id):
            if job.upstream_request_id is not None or job.submit_state not in (
                SubmitState.sending,
                SubmitState.ambiguous,
            ):
                return NOTHING
            changes = {
                "submit_state": SubmitState.submitted,
                "upstream_request_id": request_id,
                "status_url": event.status_url,
                "response_url": event.response_url,
                "cancel_url": event.cancel_url,
                # a webhook is its completion: no slot held at fal any more
                "upstream_completed": event.completed,
            }
            found = (("job.attached", {"request_id": request_id, "found_by": event.found_by}),)
            if job.status is JobStatus.queued:
                changes["status"] = JobStatus.starting
                found += (("job.started", {"request_id": request_id, "queue_position": None}),)
            return Transition(
                changes=changes,
                next_action_at=now,
                record_request=request_id,
                events=found,
                wake=Wake.REPORTED,
            )
        case ev.NeverReceived():
            if job.submit_state not in (SubmitState.sending, SubmitState.ambiguous):
                return Transition(next_action_at=now)
            return Transition(
                changes={"submit_state": SubmitState.pending},
                next_action_at=now,
                events=(("job.submit_retrying", {"reason": "fal never received it"}),),
            )
        case ev.Progress():
            return _progress(job, event, now, policy)
        case ev.UpstreamCompleted(inference_s=inference_s, logs=logs):
            if job.upstream_completed:
                return NOTHING
            changes: dict[str, Any] = {"upstream_completed": True, "queue_position": None}
            # Completed after our cancel, never seen running, no compute time: fal dropped it
            # from its queue (it never ran, so it was not started).
            dropped = (
                job.cancel_requested_at is not None
                and job.status is JobStatus.starting
                and not inference_s
            )
            events = () if dropped else _ran(job, now, inference_s, changes)
            events += _new_logs(job, logs, changes)
            if inference_s is not None:
                changes["inference_s"] = inference_s
            return Transition(
                changes=changes, next_action_at=now, events=events, wake=Wake.COMPLETED
            )
        case ev.CompletionReported():
            # It holds no slot at fal any more; the result is what is due.
            changes = {} if job.upstream_completed else {"upstream_completed": True}
            return Transition(changes=changes, next_action_at=now, wake=Wake.REPORTED)
        case ev.Succeeded(result=result, output=output, inference_s=inference_s, logs=logs):
            changes = {"result": result, "upstream_output": output, "upstream_completed": True}
            inference = inference_s if inference_s is not None else job.inference_s
            changes["inference_s"] = inference
            log_events = _new_logs(job, logs, changes)
            return finish(
                job,
                now,
                JobStatus.succeeded,
                billed=Outcome("succeeded", inference),
                changes=changes,
                inference_s=inference,
                before=log_events,
            )
        case ev.OutputsUnavailable(code=code, message=message, output=output, inference_s=seconds):
            inference = seconds if seconds is not None else job.inference_s
            return finish(
                job,
                now,
                JobStatus.failed,
                error=error_of(code, message),
                # fal ran it and bills it, even though we could not fetch the files.
                billed=Outcome("succeeded", inference),
                changes={
                    "upstream_output": output,
                    "upstream_completed": True,
                    "inference_s": inference,
                },
            )
        case ev.Ended():
            return _ended(job, event, now, policy)
        case ev.CancelSent(not_found=not_found):
            if not_found:  # dropped from fal's queue: it never ran
                status, error = canceled(job, ran=False, message="Canceled.")
                return finish(
                    job,
                    now,
                    status,
                    error=error,
                    billed=Outcome("canceled_queued"),
                    changes={"cancel_sent_at": now},
                )
            # Requested, or already completed: the next look tells how it ended.
            return Transition(changes={"cancel_sent_at": now}, next_action_at=now)
        case ev.RetryLater():
            tries = job.poll_count + 1
            return Transition(
                changes={"poll_count": tries}, next_action_at=now + policy.backoff(tries)
            )
        case ev.Reschedule(at=at):
            return Transition(next_action_at=at or now)
        case ev.Split():
            return segments.split(job, event, now)
        case ev.SegmentRetried():
            return segments.segment_retried(job, event, now)
        case ev.SegmentsAssembled():
            return segments.assembled(job, event, now)
        case ev.SegmentsEnded():
            return segments.segments_ended(job, event, now)
    raise TypeError(f"not a lifecycle event: {event!r}")  # pragma: no cover


def _submit_starting(job: JobLike, event: ev.SubmitStarting, now: datetime) -> Transition:
    if job.submit_state is not SubmitState.pending:
        # Another worker's submit, or one we must not repeat: leave it to its own next step.
        return Transition(next_action_at=now)
    changes: dict[str, Any] = {
        "submit_state": SubmitState.sending,
        "submit_attempts": job.submit_attempts + 1,
        "submitted_at": now,
    }
    if event.probe is not None:
        changes["input_probe"] = event.probe
    if event.upstream_payload is not None:
        changes["upstream_payload"] = event.upstream_payload
    if event.cache_key is not None:
        changes["cache_key"] = event.cache_key
    # The lease is kept: the same step sends the request next.
    return Transition(
        changes=changes,
        reprice_micros=event.estimated_cost_micros,
        events=(("job.submitting", {"attempt": job.submit_attempts + 1}),),
    )


def _submitted(job: JobLike, event: ev.Submitted, now: datetime, policy: Policy) -> Transition:
    changes: dict[str, Any] = {
        "submit_state": SubmitState.submitted,
        "upstream_request_id": event.request_id,
        "status_url": event.status_url,
        "response_url": event.response_url,
        "cancel_url": event.cancel_url,
        "queue_position": event.queue_position,
    }
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    if job.status is JobStatus.queued:
        changes["status"] = JobStatus.starting
        events = (
            (
                "job.started",
                {"request_id": event.request_id, "queue_position": event.queue_position},
            ),
        )
    # Its webhook may have named the job first (Attached): then there is news already.
    attached = job.upstream_request_id == event.request_id
    first_look = policy.poll_max if event.watched else policy.first_look
    return Transition(
        changes=changes,
        next_action_at=now if attached else now + first_look,
        events=events,
        record_request=event.request_id,
    )


def _first_ambiguous_look(policy: Policy) -> timedelta:
    """When to look at an ambiguous submit first: ask fal's platform API (never later than the
    grace), or, with no API to ask, at the end of the grace."""
    if policy.ambiguous_lookup is None:
        return policy.ambiguous_grace
    return min(policy.ambiguous_lookup, policy.ambiguous_grace)


def _ambiguous_due(job: JobLike, now: datetime, policy: Policy) -> Transition:
    if job.submit_state is not SubmitState.ambiguous:
        return Transition(next_action_at=now)
    deadline = (job.submitted_at or job.created_at) + policy.ambiguous_grace
    if now < deadline:
        return Transition(next_action_at=deadline)
    if policy.retry_ambiguous and job.submit_attempts < 2 and job.cancel_requested_at is None:
        return Transition(
            changes={"submit_state": SubmitState.pending},
            next_action_at=now,
            events=(("job.submit_retrying", {"reason": "no webhook named the ambiguous submit"}),),
        )
    if job.cancel_requested_at is not None:
        status, error = canceled(
            job, ran=False, message="Canceled; the submit's outcome was unknown."
        )
        return finish(job, now, status, error=error)
    return finish(
        job,
        now,
        JobStatus.failed,
        error=error_of(
            "upstream_submit_ambiguous",
            "The submit to fal may or may not have been received, and no webhook named it "
            "within the grace period; it was not retried to avoid a second paid request.",
        ),
    )


def _ran(
    job: JobLike, now: datetime, inference_s: float | None, changes: dict[str, Any]
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """fal ran the job: it is (or was) processing. The event, the first time."""
    if job.status is JobStatus.processing:
        return ()
    started = now
    if inference_s is not None:
        started = max(job.submitted_at or job.created_at, now - timedelta(seconds=inference_s))
    changes["status"] = JobStatus.processing
    changes["started_at"] = job.started_at or started
    return (("job.processing", {"started_at": (job.started_at or started).isoformat()}),)


def _progress(job: JobLike, event: ev.Progress, now: datetime, policy: Policy) -> Transition:
    if job.upstream_completed:
        # A look that began before fal's completion was recorded: the result is what is due.
        return Transition(next_action_at=now) if event.polled else NOTHING
    changes: dict[str, Any] = {}
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    if event.in_progress:
        events = _ran(job, now, None, changes)
        if job.queue_position is not None:
            changes["queue_position"] = None
    elif job.status is JobStatus.starting and event.queue_position != job.queue_position:
        # Positions only while it waits in fal's queue; a running job never goes back.
        changes["queue_position"] = event.queue_position
    events += _new_logs(job, event.logs, changes)
    if not event.polled:
        return Transition(changes=changes, events=events)
    tries = job.poll_count + 1
    changes["poll_count"] = tries
    wait = policy.poll_max if event.watched else policy.backoff(tries)
    return Transition(changes=changes, next_action_at=now + wait, events=events)


def _new_logs(
    job: JobLike, logs: list[dict[str, Any]] | None, changes: dict[str, Any]
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """fal answers a request's whole log each time: keep its last lines, and record the lines
    not seen before as one ``job.logs`` event."""
    if not logs:
        return ()
    known = job.logs or []
    fresh = logs
    if known:
        last = known[-1]
        for i in range(len(logs) - 1, -1, -1):
            if logs[i] == last:
                fresh = logs[i + 1 :]
                break
    if not fresh:
        return ()
    changes["logs"] = [*known, *fresh][-MAX_LOG_LINES:]
    return (("job.logs", {"lines": fresh[-MAX_LOG_LINES:]}),)


def _ended(job: JobLike, event: ev.Ended, now: datetime, policy: Policy) -> Transition:
    outcome = event.outcome
    inference = event.inference_s if event.inference_s is not None else job.inference_s
    changes: dict[str, Any] = {"upstream_completed": True, "inference_s": inference}
    before = _new_logs(job, event.logs, changes)
    if isinstance(outcome, ResultCancelled):
        ran = job.started_at is not None or bool(inference)
        status, error = canceled(
            job,
            ran=ran,
            message="Canceled while running at fal.",
            upstream=upstream_error(outcome.status_code, outcome.error_type, outcome.detail),
        )
        return finish(
            job,
            now,
            status,
            billed=Outcome("canceled_running" if ran else "canceled_queued", inference),
            error=error,
            changes=changes,
            before=before,
        )
    if isinstance(outcome, ResultNotFound):
        return finish(
            job,
            now,
            JobStatus.failed,
            billed=Outcome("unknown", inference),
            error=error_of(
                "upstream_result_expired",
                "fal no longer has this request's result (results are kept about an hour).",
                upstream_error(404, None, outcome.detail),
            ),
            changes=changes,
            before=before,
        )
    billed = Outcome(failure_kind(outcome.status_code), inference)
    code = failure_code(outcome)
    upstream = upstream_error(outcome.status_code, outcome.error_type, outcome.detail)
    ending = finish(
        job,
        now,
        JobStatus.failed,
        billed=billed,
        error=error_of(code, outcome.message, upstream),
        changes=changes,
        before=before,
    )
    return fall_back_or(
        job,
        now,
        policy,
        ending,
        code=code,
        message=outcome.message,
        upstream=upstream,
        billed=billed,
        changes=changes,
        before=before,
    )


def failure_code(outcome: ResultFailed) -> str:
    if outcome.status_code == 422:
        return "upstream_validation"
    if outcome.error_type == "request_timeout" and outcome.status_code == 504:
        return "upstream_start_timeout"
    if outcome.status_code >= 500:
        return "upstream_runner_error"
    return "upstream_error"
