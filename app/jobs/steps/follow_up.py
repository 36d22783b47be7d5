"""After the submit: find out how the job ended at fal (its webhook, the status stream's news,
or a poll), cancel it when asked, time it out when it outlived its limit."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from app.jobs import lifecycle
from app.jobs.steps import finalize
from app.jobs.steps.context import StepContext, webhook_processed
from app.kit.clock import utcnow
from app.models import Job
from app.upstream.errors import TransientUpstreamError, UpstreamError
from app.upstream.outcome import FetchResult, from_webhook
from app.upstream.schemas import (
    CancelOutcome,
    QueueState,
    ResultOk,
    ResultOutcome,
    ResultPending,
)
from app.webhooks import service as webhooks

log = structlog.get_logger(__name__)


async def follow_up(ctx: StepContext, job: Job) -> None:
    if job.cancel_requested_at is not None and job.cancel_sent_at is None:
        await send_cancel(ctx, job)
        return
    # Without a public URL no webhook was asked for: nothing to look up.
    event = None
    if ctx.settings.public_url and job.upstream_request_id is not None:
        async with ctx.sessionmaker() as session:
            event = await webhooks.event_of_request(session, job.upstream_request_id)
    if event is not None:
        outcome = from_webhook(event.body)
        if isinstance(outcome, FetchResult):
            outcome = await ctx.fal.result(job.response_url) if job.response_url else None
        if outcome is not None and not isinstance(outcome, ResultPending):
            inference_s, logs = await _final_metrics(ctx, job)
            await complete(ctx, job, outcome, inference_s, logs, webhook_event=event.id)
            return
    if job.status_url is None or job.response_url is None:
        # Attached by a webhook after an ambiguous submit: we only know what the webhook says.
        await ctx.apply(job.id, lifecycle.Reschedule(utcnow() + ctx.settings.poll_interval_max))
        return
    if job.upstream_completed:
        # The status stream saw it complete (with fal's metrics and logs): read the result.
        await complete(ctx, job, await ctx.fal.result(job.response_url), job.inference_s, None)
        return
    try:
        status = await ctx.fal.status(job.status_url, logs=True)
    except TransientUpstreamError as exc:
        log.warning("status poll failed; will retry", job_id=str(job.id), error=str(exc))
        await ctx.apply(job.id, lifecycle.RetryLater(str(exc)))
        return
    logs = [e.model_dump(mode="json") for e in status.logs]
    if status.status is QueueState.COMPLETED:
        outcome = await ctx.fal.result(job.response_url)
        await complete(ctx, job, outcome, status.inference_time, logs)
        return
    watched = ctx.watcher.watch(job)
    await ctx.apply(
        job.id,
        lifecycle.Progress(
            in_progress=status.status is QueueState.IN_PROGRESS,
            queue_position=status.queue_position,
            logs=logs,
            polled=True,
            watched=watched,
        ),
    )


async def _final_metrics(
    ctx: StepContext, job: Job
) -> tuple[float | None, list[dict[str, Any]] | None]:
    """A webhook carries no metrics: fal's inference time (what ThinkSound is billed by) and the
    final logs come from one status call, unless the status stream brought them already."""
    if job.inference_s is not None or job.status_url is None:
        return job.inference_s, None
    try:
        final = await ctx.fal.status(job.status_url, logs=True)
    except UpstreamError as exc:
        log.warning("no final status for metrics", job_id=str(job.id), error=str(exc))
        return None, None
    return final.inference_time, [e.model_dump(mode="json") for e in final.logs]


async def complete(
    ctx: StepContext,
    job: Job,
    outcome: ResultOutcome,
    inference_s: float | None,
    logs: list[dict[str, Any]] | None,
    *,
    webhook_event: uuid.UUID | None = None,
) -> None:
    """fal's final answer: a success is finalized (outputs fetched and stored), anything else
    ends the job as fal decided."""
    if isinstance(outcome, ResultPending):
        await ctx.apply(job.id, lifecycle.RetryLater("the result is not ready yet"))
        return
    if isinstance(outcome, ResultOk):
        await finalize.finalize(ctx, job, outcome.output, inference_s, logs, webhook_event)
        return
    await ctx.apply(
        job.id,
        lifecycle.Ended(outcome, inference_s, logs),
        also=webhook_processed(webhook_event),
    )


async def send_cancel(ctx: StepContext, job: Job) -> None:
    not_found = False
    if job.cancel_url is not None:
        try:
            not_found = await ctx.fal.cancel(job.cancel_url) is CancelOutcome.NOT_FOUND
        except TransientUpstreamError as exc:
            log.warning("cancel failed; will retry", job_id=str(job.id), error=str(exc))
            await ctx.apply(job.id, lifecycle.RetryLater(str(exc)))
            return
    await ctx.apply(job.id, lifecycle.CancelSent(not_found=not_found))


async def time_out(ctx: StepContext, job: Job) -> None:
    if job.cancel_url is not None and not job.upstream_completed:
        try:
            await ctx.fal.cancel(job.cancel_url)
        except UpstreamError as exc:
            log.warning("cancel on timeout failed", job_id=str(job.id), error=str(exc))
    await ctx.apply(job.id, lifecycle.TimedOut(ctx.settings.job_timeout))
