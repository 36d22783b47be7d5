"""The worker's side of a job: one *step* each time a worker holds the job's lease.

A step reads the job (short transaction), talks to fal or moves files (no transaction held open),
then writes the outcome (short transaction) only if the lease is still ours. Every step ends by
releasing the lease and saying when the job next needs a worker (``next_action_at``), or by
finishing it. Steps are safe to repeat: a worker that dies mid-step leaves the lease to expire
and the next worker re-reads the state and picks up from there.

The submit is the one step that cannot simply be repeated (fal has no idempotency key), so its
state is written down *before* the HTTP call: a worker that finds ``submit_state = sending``
knows a request may exist, and treats it as ambiguous instead of sending another.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog.registry import CATALOG, ModelSpec
from app.config import AmbiguousSubmitPolicy, Settings
from app.db.driver import DriverPool
from app.db.engine import unit_of_work
from app.files.service import FileRemoved
from app.jobs.preflight import Checked, InputRejected, InputUnavailable, preflight
from app.jobs.repository import notify_workers
from app.kit.clock import utcnow
from app.media.errors import MediaError
from app.media.extract import extract_audio
from app.media.normalize import fit_audio_to_video
from app.media.probe import MediaInfo, probe
from app.models import FalWebhookEvent, FileKind, Job, JobStatus, StoredFile, SubmitState
from app.models.fal_webhook_event import WebhookEventState
from app.storage import Storage
from app.upstream.errors import (
    AmbiguousSubmitError,
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
)
from app.upstream.fal import FalClient
from app.upstream.schemas import (
    CancelOutcome,
    QueueState,
    ResultCancelled,
    ResultFailed,
    ResultNotFound,
    ResultOk,
    ResultOutcome,
    ResultPending,
)
from app.usage import budgets, ledger
from app.usage.estimates import estimate_job
from app.usage.ledger import Outcome
from app.webhooks.tokens import JobTokens

log = structlog.get_logger(__name__)

MAX_LOG_LINES = 100


@dataclass
class WorkerContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    fal: FalClient
    storage: Storage
    tokens: JobTokens
    owner: str
    tmp_dir: Path
    # Single statements on the path to a submit (app.db.driver); set when the worker opens.
    driver: DriverPool | None = None


class LeaseLost(Exception):
    """Another worker holds the job now: our step's outcome must not be written."""


# --- reading and writing a job under our lease ---------------------------------------------------


async def _load(session: AsyncSession, job_id: uuid.UUID, owner: str) -> Job:
    job = (await session.scalars(select(Job).where(Job.id == job_id).with_for_update())).first()
    if job is None or job.lease_owner != owner:
        raise LeaseLost(str(job_id))
    return job


# When the job a step released is next due (None: finished, or not released). Each step runs in
# a task of its own, so the worker reads its step's value: it looks again at that time instead of
# claiming at once (nothing of this job is due) or only at its next poll.
released_until: ContextVar[datetime | None] = ContextVar("released_until", default=None)


def _release(job: Job, next_action_at: datetime | None) -> None:
    job.lease_owner = None
    job.lease_expires_at = None
    job.next_action_at = None if job.status.terminal else next_action_at
    released_until.set(job.next_action_at)


async def _finish(
    session: AsyncSession,
    ctx: WorkerContext,
    job: Job,
    status: JobStatus,
    *,
    error: dict[str, Any] | None = None,
    billed: Outcome | None = None,
) -> None:
    """The job's final state, its usage settled (``billed``: how its fal request ended, None when
    none reached fal) and its budget reservation released, all in the caller's transaction."""
    now = utcnow()
    job.status = status
    job.error = error
    job.completed_at = now
    job.queue_position = None
    if job.started_at is None and status is JobStatus.succeeded and job.inference_s is not None:
        # We never saw it running (a short run between two polls, or a webhook): fal's own
        # inference time is the best account of when it started.
        job.started_at = max(
            job.submitted_at or job.created_at, now - timedelta(seconds=job.inference_s)
        )
    _release(job, None)
    await ledger.settle_job(session, job, billed, bill_422=ctx.settings.bill_upstream_422)


def _error(code: str, message: str, upstream: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "upstream": upstream}


def _upstream_error_body(err: PermanentUpstreamError | ResultFailed) -> dict[str, Any]:
    return {
        "status_code": err.status_code,
        "error_type": err.error_type,
        "detail": err.detail,
    }


async def _write(
    ctx: WorkerContext, job_id: uuid.UUID, mutate: Callable[[AsyncSession, Job], Awaitable[None]]
) -> Job:
    """``mutate`` the job under its row lock, if our lease still holds; the row as committed."""
    async with unit_of_work(ctx.sessionmaker) as session:
        job = await _load(session, job_id, ctx.owner)
        await mutate(session, job)
        await session.flush()
    return job


# --- the step ------------------------------------------------------------------------------------


async def run_step(ctx: WorkerContext, job: Job) -> None:
    """One step of ``job`` as its claim answered it (the row read while our lease was taken:
    the step's fresh read, without a transaction of its own). Writes reload the row under its
    lock and check the lease, as always."""
    job_id = job.id
    bound = log.bind(job_id=str(job_id))
    try:
        if job.status.terminal:
            return
        if utcnow() - job.created_at > ctx.settings.job_timeout:
            await _time_out(ctx, job)
        elif job.submit_state is SubmitState.pending:
            await _dispatch(ctx, job)
        elif job.submit_state is SubmitState.sending:
            await _found_mid_send(ctx, job)
        elif job.submit_state is SubmitState.ambiguous:
            await _resolve_ambiguous(ctx, job)
        else:
            await _follow_up(ctx, job)
    except LeaseLost:
        bound.warning("lease lost; another worker has the job")
    except Exception:
        bound.exception("job step failed; retrying later")
        await _reschedule_after_crash(ctx, job_id)


async def _reschedule_after_crash(ctx: WorkerContext, job_id: uuid.UUID) -> None:
    async def mutate(session: AsyncSession, job: Job) -> None:
        job.poll_count += 1
        _release(job, utcnow() + _backoff(ctx.settings, job.poll_count))

    try:
        await _write(ctx, job_id, mutate)
    except Exception:  # the lease will expire and the job comes back anyway
        log.exception("could not reschedule job", job_id=str(job_id))


def _backoff(settings: Settings, n: int) -> timedelta:
    lo = settings.poll_interval_min.total_seconds()
    hi = settings.poll_interval_max.total_seconds()
    return timedelta(seconds=min(hi, lo * (1.5 ** max(0, n - 1))))


# --- submit --------------------------------------------------------------------------------------


MAX_PREFLIGHT_TRIES = 3


async def _preflight(ctx: WorkerContext, job: Job, spec: ModelSpec) -> Checked | None:
    """Check the input before any upstream request (see app.jobs.preflight). Returns what was
    measured (recorded by the caller, with the 'sending' mark), or None when the step ended here
    (rejected, or to be retried later)."""
    upload = None
    if job.input_file_id is not None:
        async with ctx.sessionmaker() as session:
            upload = await session.get(StoredFile, job.input_file_id)
    try:
        checked = await preflight(
            spec=spec,
            job_input=job.input,
            upload=upload,
            settings=ctx.settings,
            storage=ctx.storage,
            fal=ctx.fal,
            tmp_dir=ctx.tmp_dir,
            job_id=job.id,
            secret=ctx.tokens.secret,
        )
    except InputRejected as exc:
        log.info(
            "input rejected before any upstream request",
            job_id=str(job.id),
            code=exc.code,
            **exc.measured,
        )
        error = {
            "code": exc.code,
            "message": exc.message,
            "upstream": None,
            "details": exc.measured or None,
        }

        async def reject(session: AsyncSession, row: Job) -> None:
            await _finish(session, ctx, row, JobStatus.failed, error=error)

        await _write(ctx, job.id, reject)
        return None
    except (InputUnavailable, UpstreamError, FileRemoved) as exc:
        message = getattr(exc, "detail", None) or str(exc)

        async def later(session: AsyncSession, row: Job) -> None:
            row.poll_count += 1
            if row.poll_count >= MAX_PREFLIGHT_TRIES:
                await _finish(
                    session,
                    ctx,
                    row,
                    JobStatus.failed,
                    error={
                        "code": "video_unreachable",
                        "message": f"The input could not be fetched: {message}",
                        "upstream": None,
                        "details": None,
                    },
                )
                return
            _release(row, utcnow() + _backoff(ctx.settings, row.poll_count + 2))

        log.warning("input not available yet; will retry", job_id=str(job.id), error=message)
        await _write(ctx, job.id, later)
        return None

    return checked


async def _record_preflight(
    session: AsyncSession, ctx: WorkerContext, spec: ModelSpec, row: Job, checked: Checked
) -> None:
    """Keep the probe and re-price the budget reservation by the measured duration; the job
    fails here if the new estimate no longer fits the tenant's budget."""
    row.input_probe = checked.probe
    if checked.video_url is not None:
        row.upstream_payload = {**row.upstream_payload, "video_url": checked.video_url}
    estimate = await estimate_job(session, spec, ctx.settings, video_duration_s=checked.duration_s)
    if estimate.cost_micros is None:
        return
    try:
        await budgets.adjust(session, row, estimate.cost_micros)
    except budgets.BudgetExceeded as exc:
        await _finish(
            session,
            ctx,
            row,
            JobStatus.failed,
            error={"code": exc.code, "message": exc.detail, "upstream": None, "details": exc.extra},
        )


# The preflight's record and the 'sending' mark in one statement (see _mark_sending_alone), on the
# driver pool: through SQLAlchemy the statement cost more CPU than its round trip. NULL leaves a
# column as it is (the probe and the payload are JSON objects, never JSON null).
_MARK_SENDING_ALONE = """
    UPDATE jobs SET submit_state = 'sending', submit_attempts = submit_attempts + 1,
        submitted_at = $3, updated_at = now(),
        input_probe = coalesce($4::jsonb, input_probe),
        upstream_payload = coalesce($5::jsonb, upstream_payload),
        estimated_cost_micros = coalesce($6::bigint, estimated_cost_micros)
    WHERE id = $1 AND lease_owner = $2 AND submit_state = 'pending'
      AND status IN ('queued', 'starting', 'processing')
"""


async def _mark_sending_alone(
    ctx: WorkerContext, spec: ModelSpec, job: Job, checked: Checked | None
) -> bool:
    """The preflight's record and the 'sending' mark as ONE statement committed on its own (one
    round trip, where the general path takes four and loads the row): True when it took. False
    leaves the decision to the general path (``mark_sending``): a budget reservation to re-price
    under its period's lock, or a row that is no longer ours to send (lease lost, canceled).

    Nothing else needs the row lock here: the WHERE clause is the lease and state check, which
    Postgres re-evaluates on the row's newest version, so a cancel committed meanwhile makes the
    statement match nothing. The statement is its own transaction, committed with the usual WAL
    flush before the request can leave: "sending" is durable, as always."""
    assert ctx.driver is not None
    probe: str | None = None
    payload: dict[str, Any] | None = None
    estimate_micros: int | None = None
    if checked is not None:
        if job.budget_period_start is not None:
            return False
        # Estimates are cached: this session reads the database only when the cache is cold.
        async with ctx.sessionmaker() as session:
            estimate = await estimate_job(
                session, spec, ctx.settings, video_duration_s=checked.duration_s
            )
        probe = json.dumps(checked.probe)
        # What budgets.adjust does for a job with no reservation behind it.
        estimate_micros = estimate.cost_micros
        if checked.video_url is not None:
            payload = {**job.upstream_payload, "video_url": checked.video_url}
    async with ctx.driver.acquire() as conn:
        status = await conn.execute(
            _MARK_SENDING_ALONE,
            job.id,
            ctx.owner,
            utcnow(),
            probe,
            None if payload is None else json.dumps(payload),
            estimate_micros,
        )
    if status != "UPDATE 1":
        return False
    if payload is not None:
        job.upstream_payload = payload
    return True


async def _dispatch(ctx: WorkerContext, job: Job) -> None:
    spec = CATALOG.resolve(job.model)
    assert spec is not None
    checked: Checked | None = None
    if job.input_probe is None:
        checked = await _preflight(ctx, job, spec)
        if checked is None:
            return
    if not await _mark_sending_alone(ctx, spec, job, checked):
        row = await _write(ctx, job.id, _mark_sending(ctx, spec, checked))
        if row.status.terminal:
            return
        job.upstream_payload = row.upstream_payload  # an upload's URL for fal, set by the preflight
    await _submit(ctx, job)


def _mark_sending(
    ctx: WorkerContext, spec: ModelSpec, checked: Checked | None
) -> Callable[[AsyncSession, Job], Awaitable[None]]:
    async def mark_sending(session: AsyncSession, row: Job) -> None:
        if row.status.terminal:  # canceled by its tenant meanwhile (allowed while 'pending')
            _release(row, None)
            return
        # One transaction with the preflight's record (the probe, the re-priced reservation):
        # a crash before it commits leaves the job 'pending', checked again by the next worker.
        if checked is not None:
            await _record_preflight(session, ctx, spec, row, checked)
            if row.status.terminal:
                return
        # Committed before the request leaves: after a crash, "sending" means "may exist at fal".
        row.submit_state = SubmitState.sending
        row.submit_attempts += 1
        row.submitted_at = utcnow()

    return mark_sending


async def _submit(ctx: WorkerContext, job: Job) -> None:
    """Send the job ('sending' is committed) and record what fal answered."""
    settings = ctx.settings
    webhook_url = (
        ctx.tokens.webhook_url(settings.public_url, job.id) if settings.public_url else None
    )
    try:
        submitted = await ctx.fal.submit(
            job.endpoint,
            job.upstream_payload,
            webhook_url=webhook_url,
            start_timeout_s=settings.upstream_start_timeout.total_seconds(),
        )
    except AmbiguousSubmitError as exc:
        log.warning(
            "ambiguous submit; waiting for a webhook naming the job",
            job_id=str(job.id),
            error=str(exc),
        )

        async def mark_ambiguous(session: AsyncSession, row: Job) -> None:
            if row.submit_state is SubmitState.submitted:  # a webhook attached it meanwhile
                _release(row, utcnow())
                return
            row.submit_state = SubmitState.ambiguous
            _release(row, utcnow() + settings.ambiguous_submit_grace)

        await _write(ctx, job.id, mark_ambiguous)
        return
    except TransientUpstreamError as exc:
        # Certainly no request at fal: back to pending, try again later.
        log.warning(
            "submit failed before reaching fal; will retry", job_id=str(job.id), error=str(exc)
        )

        retry_after = exc.retry_after

        async def back_to_pending(session: AsyncSession, row: Job) -> None:
            row.submit_state = SubmitState.pending
            delay = _backoff(settings, row.submit_attempts)
            if retry_after:
                delay = max(delay, timedelta(seconds=float(retry_after)))
            _release(row, utcnow() + delay)

        await _write(ctx, job.id, back_to_pending)
        return
    except PermanentUpstreamError as exc:
        if exc.code in ("upstream_auth", "upstream_account_locked"):
            log.error(
                "fal refused our credentials", job_id=str(job.id), code=exc.code, error=str(exc)
            )

        created = exc.request_id is not None  # fal gave it an id: it exists there
        error = _error(exc.code, exc.message, _upstream_error_body(exc))

        async def refused(session: AsyncSession, row: Job) -> None:
            row.submit_state = SubmitState.submitted if created else SubmitState.pending
            await _finish(session, ctx, row, JobStatus.failed, error=error)

        await _write(ctx, job.id, refused)
        return

    async def mark_submitted(session: AsyncSession, row: Job) -> None:
        row.submit_state = SubmitState.submitted
        row.upstream_request_id = submitted.request_id
        await ledger.record_request(session, row, submitted.request_id, unit=ledger.unit_of(row))
        row.status_url = submitted.status_url
        row.response_url = submitted.response_url
        row.cancel_url = submitted.cancel_url
        row.queue_position = submitted.queue_position
        if row.status is JobStatus.queued:
            row.status = JobStatus.starting
        first_look = settings.webhook_grace if webhook_url else settings.poll_interval_min
        beaten = await session.scalar(
            select(FalWebhookEvent.id).where(FalWebhookEvent.request_id == submitted.request_id)
        )
        # A fast run's webhook can land before we record the submit: then look at once.
        _release(row, utcnow() if beaten else utcnow() + first_look)

    await _write(ctx, job.id, mark_submitted)
    log.info("submitted to fal", job_id=str(job.id), request_id=submitted.request_id)


async def _found_mid_send(ctx: WorkerContext, job: Job) -> None:
    """A worker died between writing 'sending' and learning the answer: the request may exist."""
    log.warning(
        "found a submit interrupted mid-flight; treating it as ambiguous", job_id=str(job.id)
    )

    async def mutate(session: AsyncSession, row: Job) -> None:
        row.submit_state = SubmitState.ambiguous
        sent = row.submitted_at or utcnow()
        _release(row, sent + ctx.settings.ambiguous_submit_grace)

    await _write(ctx, job.id, mutate)


async def _resolve_ambiguous(ctx: WorkerContext, job: Job) -> None:
    settings = ctx.settings
    deadline = (job.submitted_at or job.created_at) + settings.ambiguous_submit_grace
    if utcnow() < deadline:
        await _write(ctx, job.id, _reschedule_at(deadline))
        return
    retry = settings.ambiguous_submit_policy is AmbiguousSubmitPolicy.retry
    if retry and job.submit_attempts < 2 and job.cancel_requested_at is None:
        log.warning("no webhook named the ambiguous submit; resubmitting once", job_id=str(job.id))

        async def back_to_pending(session: AsyncSession, row: Job) -> None:
            row.submit_state = SubmitState.pending

        await _write(ctx, job.id, back_to_pending)
        await _dispatch(ctx, job)
        return

    async def fail(session: AsyncSession, row: Job) -> None:
        if row.cancel_requested_at is not None:
            await _finish(
                session,
                ctx,
                row,
                JobStatus.canceled,
                error=_error("canceled", "Canceled; the submit's outcome was unknown."),
            )
            return
        await _finish(
            session,
            ctx,
            row,
            JobStatus.failed,
            error=_error(
                "upstream_submit_ambiguous",
                "The submit to fal may or may not have been received, and no webhook named it "
                "within the grace period; it was not retried to avoid a second paid request.",
            ),
        )

    await _write(ctx, job.id, fail)


def _reschedule_at(when: datetime) -> Callable[[AsyncSession, Job], Awaitable[None]]:
    async def mutate(session: AsyncSession, row: Job) -> None:
        _release(row, when)

    return mutate


# --- after submit: webhook, poll, cancel, finalize --------------------------------------------


async def _follow_up(ctx: WorkerContext, job: Job) -> None:
    if job.cancel_requested_at is not None and job.cancel_sent_at is None:
        await _send_cancel(ctx, job)
        return
    event = await _webhook_event(ctx, job)
    if event is not None:
        outcome = await _outcome_from_webhook(ctx, job, event)
        if outcome is not None:
            # The webhook carries no metrics: one status call gives fal's inference time (what
            # ThinkSound is billed by) and the final logs.
            inference_s, logs = None, None
            if job.status_url is not None:
                try:
                    final = await ctx.fal.status(job.status_url, logs=True)
                    inference_s = final.inference_time
                    logs = [e.model_dump(mode="json") for e in final.logs]
                except UpstreamError as exc:
                    log.warning("no final status for metrics", job_id=str(job.id), error=str(exc))
            await _complete(
                ctx, job, outcome, inference_s=inference_s, logs=logs, event_id=event.id
            )
            return
    if job.status_url is None:
        # Attached by a webhook after an ambiguous submit: we only know what the webhook says.
        await _write(ctx, job.id, _reschedule_at(utcnow() + ctx.settings.poll_interval_max))
        return
    try:
        status = await ctx.fal.status(job.status_url, logs=True)
    except TransientUpstreamError as exc:
        log.warning("status poll failed; will retry", job_id=str(job.id), error=str(exc))
        await _write(ctx, job.id, _poll_again(ctx.settings))
        return
    if status.status is QueueState.COMPLETED:
        assert job.response_url is not None
        outcome = await ctx.fal.result(job.response_url)
        if isinstance(outcome, ResultPending):
            await _write(ctx, job.id, _poll_again(ctx.settings))
            return
        await _complete(
            ctx,
            job,
            outcome,
            inference_s=status.inference_time,
            logs=[e.model_dump(mode="json") for e in status.logs],
        )
        return

    async def progress(session: AsyncSession, row: Job) -> None:
        if status.status is QueueState.IN_PROGRESS:
            row.status = JobStatus.processing
            row.queue_position = None
            row.started_at = row.started_at or utcnow()
        else:
            row.status = JobStatus.starting
            row.queue_position = status.queue_position
        if status.logs:
            row.logs = [e.model_dump(mode="json") for e in status.logs][-MAX_LOG_LINES:]
        row.poll_count += 1
        _release(row, utcnow() + _backoff(ctx.settings, row.poll_count))

    await _write(ctx, job.id, progress)


def _poll_again(settings: Settings) -> Callable[[AsyncSession, Job], Awaitable[None]]:
    async def mutate(session: AsyncSession, row: Job) -> None:
        row.poll_count += 1
        _release(row, utcnow() + _backoff(settings, row.poll_count))

    return mutate


async def _send_cancel(ctx: WorkerContext, job: Job) -> None:
    outcome: CancelOutcome | None = None
    if job.cancel_url is not None:
        try:
            outcome = await ctx.fal.cancel(job.cancel_url)
        except TransientUpstreamError as exc:
            log.warning("cancel failed; will retry", job_id=str(job.id), error=str(exc))
            await _write(ctx, job.id, _poll_again(ctx.settings))
            return

    async def mutate(session: AsyncSession, row: Job) -> None:
        row.cancel_sent_at = utcnow()
        if outcome is CancelOutcome.NOT_FOUND:
            await _finish(
                session,
                ctx,
                row,
                JobStatus.canceled,
                error=_error("canceled", "Canceled."),
                billed=Outcome("canceled_queued"),
            )
            return
        # Requested or already completed: the next poll tells how it ended.
        _release(row, utcnow())

    await _write(ctx, job.id, mutate)


async def _webhook_event(ctx: WorkerContext, job: Job) -> FalWebhookEvent | None:
    if job.upstream_request_id is None:
        return None
    async with ctx.sessionmaker() as session:
        stmt = select(FalWebhookEvent).where(FalWebhookEvent.request_id == job.upstream_request_id)
        return (await session.scalars(stmt)).first()


_STATUS_IN_ERROR = re.compile(r"\b([1-5]\d\d)\b")


async def _outcome_from_webhook(
    ctx: WorkerContext, job: Job, event: FalWebhookEvent
) -> ResultOutcome | None:
    body = event.body
    payload = body.get("payload")
    if body.get("status") == "OK" and isinstance(payload, dict):
        return ResultOk(output=payload, request_id=event.request_id)
    if payload is None and body.get("payload_error"):
        # fal could not serialise the output into the webhook: the queue still has it.
        if job.response_url is None:
            return None
        return await ctx.fal.result(job.response_url)
    if body.get("status") != "OK":
        match = _STATUS_IN_ERROR.search(str(body.get("error") or ""))
        status_code = int(match.group(1)) if match else 500
        detail = payload.get("detail") if isinstance(payload, dict) else payload
        error_type = payload.get("error_type") if isinstance(payload, dict) else None
        if status_code == 499:
            return ResultCancelled(
                status_code=499, error_type=error_type, detail=detail, request_id=event.request_id
            )
        return ResultFailed(
            status_code=status_code,
            body=payload,
            error_type=error_type,
            detail=detail,
            retryable=status_code >= 500,
            request_id=event.request_id,
        )
    return None


async def _complete(
    ctx: WorkerContext,
    job: Job,
    outcome: ResultOutcome,
    *,
    inference_s: float | None = None,
    logs: list[dict[str, Any]] | None = None,
    event_id: uuid.UUID | None = None,
) -> None:
    if isinstance(outcome, ResultOk):
        await _finalize_success(ctx, job, outcome.output, inference_s, logs, event_id)
        return

    async def mutate(session: AsyncSession, row: Job) -> None:
        row.upstream_completed = True
        if inference_s is not None:
            row.inference_s = inference_s
        if logs:
            row.logs = logs[-MAX_LOG_LINES:]
        if isinstance(outcome, ResultCancelled):
            ran = row.started_at is not None or bool(row.inference_s)
            await _finish(
                session,
                ctx,
                row,
                JobStatus.canceled,
                billed=Outcome("canceled_running" if ran else "canceled_queued", row.inference_s),
                error=_error(
                    "canceled",
                    "Canceled while running at fal.",
                    {
                        "status_code": outcome.status_code,
                        "error_type": outcome.error_type,
                        "detail": outcome.detail,
                    },
                ),
            )
        elif isinstance(outcome, ResultNotFound):
            await _finish(
                session,
                ctx,
                row,
                JobStatus.failed,
                billed=Outcome("unknown", row.inference_s),
                error=_error(
                    "upstream_result_expired",
                    "fal no longer has this request's result (results are kept about an hour).",
                    {"status_code": 404, "error_type": None, "detail": outcome.detail},
                ),
            )
        elif isinstance(outcome, ResultFailed):
            await _finish(
                session,
                ctx,
                row,
                JobStatus.failed,
                billed=Outcome(_billing_kind(outcome), row.inference_s),
                error=_error(
                    _failure_code(outcome), outcome.message, _upstream_error_body(outcome)
                ),
            )
        await _mark_event(session, event_id)

    await _write(ctx, job.id, mutate)


def _billing_kind(outcome: ResultFailed) -> str:
    if outcome.status_code == 422:
        return "upstream_422"
    if outcome.status_code >= 500:
        return "upstream_5xx"
    return "upstream_4xx"


def _failure_code(outcome: ResultFailed) -> str:
    if outcome.status_code == 422:
        return "upstream_validation"
    if outcome.error_type == "request_timeout" and outcome.status_code == 504:
        return "upstream_start_timeout"
    if outcome.status_code >= 500:
        return "upstream_runner_error"
    return "upstream_error"


async def _mark_event(session: AsyncSession, event_id: uuid.UUID | None) -> None:
    if event_id is None:
        return
    event = await session.get(FalWebhookEvent, event_id)
    if event is not None and event.processed_at is None:
        event.state = WebhookEventState.processed
        event.processed_at = utcnow()


async def _time_out(ctx: WorkerContext, job: Job) -> None:
    if job.cancel_url is not None and not job.upstream_completed:
        try:
            await ctx.fal.cancel(job.cancel_url)
        except UpstreamError as exc:
            log.warning("cancel on timeout failed", job_id=str(job.id), error=str(exc))

    async def mutate(session: AsyncSession, row: Job) -> None:
        await _finish(
            session,
            ctx,
            row,
            JobStatus.failed,
            error=_error("timeout", f"The job did not finish within {ctx.settings.job_timeout}."),
            billed=Outcome("unknown", row.inference_s) if row.upstream_request_id else None,
        )

    await _write(ctx, job.id, mutate)


# --- finalize: fetch, measure, store -------------------------------------------------------------


@dataclass
class _StoredOutput:
    kind: FileKind
    key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    media: MediaInfo
    source_url: str | None


def _file_url(output: dict[str, Any], field: str | None) -> str | None:
    if field is None:
        return None
    value = output.get(field)
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return value["url"]
    return None


async def _finalize_success(
    ctx: WorkerContext,
    job: Job,
    output: dict[str, Any],
    inference_s: float | None,
    logs: list[dict[str, Any]] | None,
    event_id: uuid.UUID | None,
) -> None:
    spec = CATALOG.resolve(job.model)
    assert spec is not None, f"model {job.model} left the catalog"
    workdir = Path(tempfile.mkdtemp(prefix=f"job-{job.id}-", dir=ctx.tmp_dir))
    try:
        stored = await _fetch_outputs(ctx, job, spec, output, workdir)
    except (MediaError, PermanentUpstreamError) as exc:
        code = "output_unreadable" if isinstance(exc, MediaError) else "output_unavailable"
        error = _error(code, f"Fetching the outputs: {exc}")

        async def failed(session: AsyncSession, row: Job) -> None:
            row.upstream_completed = True
            row.upstream_output = output
            if inference_s is not None:
                row.inference_s = inference_s
            # fal ran it and bills it, even though we could not fetch the files.
            await _finish(
                session,
                ctx,
                row,
                JobStatus.failed,
                error=error,
                billed=Outcome("succeeded", row.inference_s),
            )
            await _mark_event(session, event_id)

        await _write(ctx, job.id, failed)
        return
    except TransientUpstreamError as exc:
        log.warning("fetching outputs failed; will retry", job_id=str(job.id), error=str(exc))

        # Retried until it works, the files expire at fal (a permanent error), or the job times out.
        await _write(ctx, job.id, _poll_again(ctx.settings))
        return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    async def succeed(session: AsyncSession, row: Job) -> None:
        # A repeated finalize (after a crash) replaces the files of the one before.
        await session.execute(delete(StoredFile).where(StoredFile.job_id == row.id))
        result: dict[str, Any] = {"prompt": _used_prompt(spec, row, output)}
        for item in stored:
            file = StoredFile(
                id=uuid.uuid4(),
                tenant_id=row.tenant_id,
                job_id=row.id,
                kind=item.kind,
                storage_key=item.key,
                filename=item.filename,
                content_type=item.content_type,
                size_bytes=item.size_bytes,
                sha256=item.sha256,
                media=item.media.to_dict(),
                source_url=item.source_url,
            )
            session.add(file)
            name = "video" if item.kind is FileKind.output_video else "audio"
            result[name] = _describe(file.id, item)
        row.result = result
        row.upstream_output = output
        row.upstream_completed = True
        if inference_s is not None:
            row.inference_s = inference_s
        if logs:
            row.logs = logs[-MAX_LOG_LINES:]
        await _finish(
            session, ctx, row, JobStatus.succeeded, billed=Outcome("succeeded", row.inference_s)
        )
        await _mark_event(session, event_id)
        await notify_workers(session, "job_finished")

    await _write(ctx, job.id, succeed)
    log.info("job succeeded", job_id=str(job.id))


def _used_prompt(spec: ModelSpec, job: Job, output: dict[str, Any]) -> str | None:
    if spec.outputs.prompt_field and isinstance(output.get(spec.outputs.prompt_field), str):
        return output[spec.outputs.prompt_field]
    if spec.outputs.prompt_from_payload:
        value = job.upstream_payload.get(spec.outputs.prompt_from_payload)
        return value if isinstance(value, str) else None
    return job.input.get("prompt")


def _describe(file_id: uuid.UUID, item: _StoredOutput) -> dict[str, Any]:
    m = item.media
    out: dict[str, Any] = {
        "file_id": str(file_id),
        "content_type": item.content_type,
        "size_bytes": item.size_bytes,
        "duration_s": m.duration_s,
        "container": m.container,
    }
    if item.kind is FileKind.output_video and m.video is not None:
        out.update(
            width=m.video.width, height=m.video.height, fps=m.video.fps, video_codec=m.video.codec
        )
        if m.audio is not None:
            out.update(
                audio_codec=m.audio.codec,
                sample_rate=m.audio.sample_rate,
                channels=m.audio.channels,
            )
    elif m.audio is not None:
        out.update(codec=m.audio.codec, sample_rate=m.audio.sample_rate, channels=m.audio.channels)
    return out


_EXT = {
    "mp4": "mp4",
    "mov": "mov",
    "webm": "webm",
    "matroska": "mkv",
    "mp3": "mp3",
    "wav": "wav",
    "ogg": "ogg",
}
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "mp4": "audio/mp4",
    "flac": "audio/flac",
}
_VIDEO_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
}


async def _fetch_outputs(
    ctx: WorkerContext, job: Job, spec: ModelSpec, output: dict[str, Any], workdir: Path
) -> list[_StoredOutput]:
    stored: list[_StoredOutput] = []
    prefix = f"jobs/{job.tenant_id}/{job.id}"
    video_url = _file_url(output, spec.outputs.video_field)
    audio_url = _file_url(output, spec.outputs.audio_field)
    if spec.outputs.video_field and video_url is None:
        raise PermanentUpstreamError(
            f"the output has no '{spec.outputs.video_field}' file", operation="result"
        )
    if spec.outputs.audio_field and audio_url is None:
        raise PermanentUpstreamError(
            f"the output has no '{spec.outputs.audio_field}' file", operation="result"
        )
    video_path: Path | None = None
    if video_url is not None:
        video_path = workdir / "video.bin"
        await ctx.fal.download(video_url, video_path, max_bytes=ctx.settings.max_output_bytes)
        if spec.outputs.audio_from_video:
            # ThinkSound's audio can come back up to ~1 s short of the video: pad or trim it to
            # the video's length (the video stream is copied, never re-encoded).
            fitted = workdir / "video.fitted.mp4"
            fit = await asyncio.to_thread(fit_audio_to_video, video_path, fitted)
            if fit.changed:
                log.info(
                    "audio fitted to the video",
                    job_id=str(job.id),
                    padded_s=fit.padded_s,
                    trimmed_s=fit.trimmed_s,
                )
                video_path = fitted
        media = await asyncio.to_thread(probe, video_path)
        ext = _EXT.get(media.container, "mp4")
        stored.append(
            await _store(
                ctx,
                FileKind.output_video,
                f"{prefix}/video.{ext}",
                video_path,
                _VIDEO_TYPES.get(media.container, "video/mp4"),
                media,
                video_url,
            )
        )
    if audio_url is not None:
        audio_path = workdir / "audio.bin"
        await ctx.fal.download(audio_url, audio_path, max_bytes=ctx.settings.max_output_bytes)
        media = await asyncio.to_thread(probe, audio_path)
        ext = _EXT.get(media.container, "bin") if media.container != "mp4" else "m4a"
        stored.append(
            await _store(
                ctx,
                FileKind.output_audio,
                f"{prefix}/audio.{ext}",
                audio_path,
                _AUDIO_TYPES.get(media.container, "application/octet-stream"),
                media,
                audio_url,
            )
        )
    elif spec.outputs.audio_from_video and video_path is not None:
        m4a = workdir / "audio.m4a"
        media = await asyncio.to_thread(extract_audio, video_path, m4a)
        stored.append(
            await _store(
                ctx, FileKind.output_audio, f"{prefix}/audio.m4a", m4a, "audio/mp4", media, None
            )
        )
    return stored


async def _store(
    ctx: WorkerContext,
    kind: FileKind,
    key: str,
    path: Path,
    content_type: str,
    media: MediaInfo,
    source_url: str | None,
) -> _StoredOutput:
    obj = await ctx.storage.put_file(key, path, content_type=content_type)
    return _StoredOutput(
        kind=kind,
        key=obj.key,
        filename=key.rsplit("/", 1)[-1],
        content_type=content_type,
        size_bytes=obj.size_bytes,
        sha256=obj.sha256,
        media=media,
        source_url=source_url,
    )
