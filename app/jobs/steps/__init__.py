"""The worker's side of a job: one *step* each time a worker holds the job's lease.

A step reads the job (its claim answered the row), performs effects — fetch and check the input,
talk to fal, store the outputs — with no transaction held open, and says what happened as a
lifecycle event; the store writes the transition only if the lease is still ours
(app.jobs.store), and the transition says when the job next needs a worker. Steps are safe to
repeat: a worker that dies mid-step leaves the lease to expire, and the next worker re-reads the
state and picks up from there.

    dispatch.py    queued → 'sending' → submitted (or ambiguous, or back to pending)
    follow_up.py   a webhook, the status stream's news or a poll; cancel; time-out
    (a Cancel-After deadline that passed is decided here first: app.jobs.lifecycle)
    finalize.py    a success: fetch, measure and store the outputs
    split.py       a video longer than its model takes: its segments, each a job of its own
    assemble.py    a split job: wait for its segments (cancel them, retry one), then stitch
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from app.jobs import lifecycle
from app.jobs.steps.assemble import assemble
from app.jobs.steps.context import StepContext, step_written
from app.jobs.steps.dispatch import dispatch, found_mid_send, resolve_ambiguous
from app.jobs.steps.follow_up import follow_up, time_out
from app.jobs.store import LeaseLost
from app.kit.clock import utcnow
from app.models import Job, SubmitState
from app.telemetry import tracing

log = structlog.get_logger(__name__)

__all__ = ["StepContext", "run_step", "step_written"]


async def run_step(ctx: StepContext, job: Job) -> None:
    """One step of ``job`` as its claim answered it (the row read while our lease was taken).
    Every log line of the step carries the job and its tenant (the step runs in a task of its
    own, so the binding ends with it); with tracing on, the step is a span in the trace of the
    request that accepted the job."""
    if job.status.terminal:
        return
    now = utcnow()
    step: Callable[[StepContext, Job], Awaitable[None]]
    if job.submit_state is SubmitState.split:
        step = assemble  # its segments' jobs do the rest (its time-out too: they end first)
    elif now - job.created_at > ctx.settings.job_timeout:
        step = time_out
    elif (
        job.cancel_after_at is not None
        and job.cancel_requested_at is None
        and now >= job.cancel_after_at
    ):
        step = _deadline_passed
    elif job.submit_state is SubmitState.pending:
        step = dispatch
    elif job.submit_state is SubmitState.sending:
        step = found_mid_send
    elif job.submit_state is SubmitState.ambiguous:
        step = resolve_ambiguous
    else:
        step = follow_up
    attributes = {"foley.job_id": str(job.id), "foley.tenant_id": str(job.tenant_id)}
    with (
        structlog.contextvars.bound_contextvars(job_id=str(job.id), tenant_id=str(job.tenant_id)),
        tracing.job_span(f"job.{step.__name__}", job.traceparent, attributes),
    ):
        try:
            await step(ctx, job)
        except LeaseLost:
            log.warning("lease lost; another worker has the job")
        except Exception:
            log.exception("job step failed; retrying later")
            try:
                await ctx.apply(job.id, lifecycle.RetryLater("the step failed"))
            except Exception:  # the lease will expire and the job comes back anyway
                log.exception("could not reschedule job")


async def _deadline_passed(ctx: StepContext, job: Job) -> None:
    """Cancel-After: aborted here if never sent, else a cancel for fal (the next step)."""
    await ctx.apply(job.id, lifecycle.DeadlinePassed())
