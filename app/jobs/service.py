"""Accept, read, list and cancel jobs. The worker side of the life cycle is in app.worker."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.driver import DriverPool
from app.jobs import cache, lifecycle, store
from app.jobs.choice import candidates, resolve_model
from app.jobs.presenter import job_url, present_job, present_segments
from app.jobs.schemas import FleetOut, FleetStatus, FleetWorker, JobCreate, JobOut
from app.jobs.sources import check_input_source, check_url, names_audio_upload
from app.jobs.steps.split import planned_segments, segments_estimate
from app.jobs.store import JobStore, NewJob
from app.kit.clock import utcnow
from app.kit.idempotency import IdempotencyGuard, StoredResponse, request_fingerprint
from app.kit.money import micros_to_usd
from app.kit.pagination import InvalidCursor
from app.kit.problems import (
    BadRequest,
    Conflict,
    NotFound,
    ProblemError,
)
from app.metrics import JOBS_CREATED
from app.models import Job, JobEvent, JobStatus, SubmitState, Tenant
from app.notifications.events import DEFAULT_JOB_FILTER, job_webhook_events
from app.telemetry import tracing
from app.usage import budgets, limits
from app.usage import service as usage_service
from app.usage.estimates import Estimate, estimate_from_cache, estimate_job

log = structlog.get_logger(__name__)


class JobNotFound(NotFound):
    code = "job_not_found"


class JobNotCancelable(Conflict):
    code = "job_not_cancelable"


class TenantSuspended(ProblemError):
    status = 403
    code = "tenant_suspended"


@dataclass(frozen=True)
class Accepted:
    status: int
    body: bytes  # JSON
    headers: dict[str, str]
    replayed: bool
    job_id: uuid.UUID | None = None  # the job just stored (None: a replayed answer)


def build_job(
    tenant_id: uuid.UUID,
    body: JobCreate,
    *,
    estimated_cost_micros: int = 0,
    cancel_after: timedelta | None = None,
    cache_default: bool = False,
) -> NewJob:
    """Validate against the schema of each model it names and build the row (nothing is
    written): it starts on the first."""
    suited, named = candidates(body)
    spec, normalized = suited[0]
    now = utcnow()
    return NewJob(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        model=spec.id,
        endpoint=spec.endpoint,
        input=normalized.model_dump(mode="json", exclude_none=True),
        upstream_payload=spec.upstream_payload(normalized),
        job_metadata=dict(body.metadata),
        input_file_id=normalized.video_file_id,
        created_at=now,
        estimated_cost_micros=estimated_cost_micros,
        webhook_url=body.webhook,
        webhook_events=job_webhook_events(body.webhook_events_filter or DEFAULT_JOB_FILTER)
        if body.webhook
        else None,
        cancel_after_at=None if cancel_after is None else now + cancel_after,
        cache_requested=cache.wanted(body.cache, cache_default),
        output_options=None if body.output is None else body.output.stored(),
        candidates=named if len(named) > 1 else None,
        traceparent=tracing.current_traceparent(),
    )


async def _estimate_and_reserve(
    session: AsyncSession,
    tenant: Tenant,
    job: NewJob,
    settings: Settings,
    *,
    look_up: bool = True,
) -> tuple[NewJob, cache.Hit | None]:
    """The job with its estimate, reserved against the tenant's budget (if it has one now) in
    the session's transaction; and the result-cache hit that answers it, when its input is an
    upload (its hash is known now) and a stored success matches (then the estimate is the
    hit's price)."""
    spec = resolve_model(job.model)
    file = await check_input_source(session, tenant, job, settings)
    hit = None
    if job.cache_requested and file is not None:
        key = cache.key_of(
            model=job.model,
            endpoint=job.endpoint,
            job_input=job.input,
            upstream_payload=job.upstream_payload,
            input_sha256=file.sha256,
        )
        if key is not None:
            job = replace(job, cache_key=key)
            if look_up:
                hit = await cache.look_up(session, key, tenant_id=tenant.id, settings=settings)
    if hit is not None:
        cost_micros = await cache.hit_price_micros(session)
        job = replace(job, estimated_cost_micros=cost_micros or 0)
    else:
        duration = (file.media or {}).get("duration_s") if file is not None else None
        # An upload longer than the model takes: priced (and reserved) as the segments it will
        # run as, not as one request.
        planned = planned_segments(job, spec, duration, settings) if duration else []
        if planned:
            estimate = await segments_estimate(
                session, spec, job.upstream_payload, planned, settings
            )
        else:
            estimate = await estimate_job(
                session, spec, settings, video_duration_s=duration, payload=job.upstream_payload
            )
        job = _priced(job, estimate)
        cost_micros = estimate.cost_micros
    reservation = await budgets.reserve(session, tenant.id, cost_micros, model=job.model)
    if reservation is None:
        return job, hit
    return replace(
        job, reserved_micros=reservation.micros, budget_period_start=reservation.period_start
    ), hit


async def _answer_from_cache(
    session: AsyncSession, job_store: JobStore, job: NewJob, hit: cache.Hit
) -> Job:
    """The job just inserted, answered by the cache in the same transaction: it is never seen
    queued, and its 202 shows it succeeded."""
    row = await store.lock_for_tenant(session, job.tenant_id, job.id)
    assert row is not None
    await job_store.write(
        session, row, lifecycle.CacheHit(hit.source_id, hit.result, hit.key), owner=None
    )
    await cache.record_files(session, row, hit)
    return row


def _priced(job: NewJob, estimate: Estimate) -> NewJob:
    """The job with its estimated cost; no price is an error for the operator (and, where there
    is a budget to check, a refusal: budgets.reserve)."""
    if estimate.cost_micros is None:
        log.error("no price in force for a model", model=job.model)
    return replace(job, estimated_cost_micros=estimate.cost_micros or 0)


async def estimate_only(
    session: AsyncSession, tenant: Tenant, body: JobCreate, settings: Settings
) -> dict[str, Any]:
    """`POST /v1/jobs?dry_run=true`: validate, estimate and check the budget; create nothing.

    A dry run fetches nothing: a ThinkSound job (billed by compute time, so by the video's
    length) is estimated from the upload's measured length (its stored probe, what
    `POST /v1/validate` uses), and for a URL from `FOLEY_ESTIMATE_DEFAULT_VIDEO_S`;
    `POST /v1/validate` fetches and measures a URL first."""
    job = build_job(tenant.id, body)
    spec = resolve_model(job.model)
    file = await check_input_source(session, tenant, job, settings)
    duration = (file.media or {}).get("duration_s") if file is not None else None
    estimate = await estimate_job(
        session, spec, settings, video_duration_s=duration, payload=job.upstream_payload
    )
    allowed, reason, view = True, None, None
    try:
        view = await budgets.check(session, tenant, estimate.cost_micros or 0)
    except budgets.BudgetExceeded as exc:
        allowed, reason, view = False, exc.code, await budgets.view(session, tenant)
    if tenant.suspended_at is not None:
        allowed, reason = False, TenantSuspended.code
    return {
        "object": "estimate",
        "model": spec.id,
        "input": job.input,
        "unit": estimate.unit,
        "units": str(estimate.units),
        "unit_price_usd": micros_to_usd(estimate.unit_price_micros),
        "estimated_cost_usd": micros_to_usd(estimate.cost_micros),
        "basis": estimate.basis,
        "video_duration_s": estimate.video_duration_s,
        "allowed": allowed,
        "reason": reason,
        "budget": view.to_dict() if view else None,
    }


async def accept_job(
    sessionmaker: async_sessionmaker[AsyncSession],
    pool: DriverPool,
    tenant: Tenant,
    body: JobCreate,
    *,
    settings: Settings,
    base_url: str,
    path: str,
    idempotency_key: str | None,
    cancel_after: timedelta | None = None,
    job_store: JobStore | None = None,
) -> Accepted:
    """Store a new job; answer what the client gets (202, or a replayed first answer).

    The job is committed before this returns. Its row goes in with its creation event and
    whatever must commit with it, in one transaction: the budget reservation and the idempotency
    record. When there is no idempotency key and no upload to look up, one statement inserts
    the row alone if the tenant has no budget (read from the database in that statement, never
    from a cache); otherwise, or when it inserted nothing, the transaction does. A job that asked
    for the result cache with an upload as its input is looked up here (``job_store`` given):
    a hit is written in the same transaction, and the answer shows the job succeeded."""
    if tenant.suspended_at is not None:
        raise TenantSuspended(
            "This tenant is suspended: new jobs are refused (running jobs "
            "finish). Contact the operator."
        )
    rate_headers: dict[str, str] = {}
    rate = tenant.rate_limit_per_minute or settings.rate_limit_per_minute
    if rate is not None:
        rate_headers = (await limits.hit(sessionmaker, tenant.id, rate)).headers()
    # The estimate from the process's cache, when it has one (then, with no idempotency key and
    # no upload, one statement may store the job).
    job = build_job(  # validation first: a bad body never claims a key
        tenant.id, body, cancel_after=cancel_after, cache_default=tenant.cache_default
    )
    cached = (
        None
        if idempotency_key
        else estimate_from_cache(resolve_model(job.model), settings, payload=job.upstream_payload)
    )
    if cached is not None:
        if cached.cost_micros is None:
            log.error("no price in force for a model", model=job.model)
        job.estimated_cost_micros = cached.cost_micros or 0
    guard = None
    if idempotency_key is not None:
        guard = IdempotencyGuard(
            sessionmaker,
            tenant_id=tenant.id,
            key=idempotency_key,
            method="POST",
            path=path,
            fingerprint=request_fingerprint("POST", path, body.model_dump(mode="json")),
            retention=settings.idempotency_retention,
        )
        stored = await guard.claim()
        if stored is not None:
            return Accepted(
                stored.status,
                json.dumps(stored.body).encode(),
                {**stored.headers, **rate_headers},
                replayed=True,
            )
    headers = {"Location": job_url(base_url, job.id)}
    structlog.contextvars.bind_contextvars(job_id=str(job.id))
    try:
        inserted = False
        if cached is not None and job.input_file_id is None and not names_audio_upload(job):
            # Nothing to look up and nothing to record beside the row: unless the tenant has a
            # budget to reserve against (read in the statement itself), the row is all there is.
            check_url(job, settings)
            out = present_job(job, base_url).model_dump_json().encode()
            inserted = await store.insert_unless_budgeted(pool, job)
        if not inserted:
            async with sessionmaker() as session:
                job, hit = await _estimate_and_reserve(
                    session, tenant, job, settings, look_up=job_store is not None
                )
                out = present_job(job, base_url).model_dump_json().encode()
                await store.insert(session, job)
                if hit is not None:
                    assert job_store is not None
                    answered = await _answer_from_cache(session, job_store, job, hit)
                    usage = await usage_service.usage_of_jobs(session, [job.id])
                    shown = present_job(answered, base_url, usage.get(job.id))
                    out = shown.model_dump_json().encode()
                if guard is not None:
                    await guard.record(session, StoredResponse(202, json.loads(out), headers))
                await session.commit()
    except BaseException:
        if guard is not None:
            await guard.release()
        raise
    finally:
        if guard is not None:
            await guard.done()
    JOBS_CREATED.labels(job.model).inc()
    return Accepted(202, out, {**headers, **rate_headers}, replayed=False, job_id=job.id)


async def get_job(session: AsyncSession, tenant: Tenant, job_id: uuid.UUID) -> Job:
    job = await store.get_for_tenant(session, tenant.id, job_id)
    if job is None:
        raise JobNotFound(f"No job {job_id}.", param="job_id")
    return job


async def job_events(
    session: AsyncSession, tenant: Tenant, job_id: uuid.UUID, *, after: int, limit: int
) -> tuple[list[JobEvent], bool]:
    job = await get_job(session, tenant, job_id)
    rows, has_more = await store.events_for_tenant(
        session, tenant.id, job_id, after_seq=after, limit=limit, job_created_at=job.created_at
    )
    return list(rows), has_more


async def list_jobs(
    session: AsyncSession,
    tenant: Tenant,
    *,
    limit: int,
    status: JobStatus | None,
    model: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    starting_after: uuid.UUID | None,
    ending_before: uuid.UUID | None,
) -> tuple[list[Job], bool]:
    if starting_after and ending_before:
        raise BadRequest("Use starting_after or ending_before, not both.", param="ending_before")
    model_id = resolve_model(model).id if model else None
    after = before = None
    if starting_after is not None:
        after = await store.cursor_of(session, tenant.id, starting_after)
        if after is None:
            raise InvalidCursor(f"No job {starting_after}.", param="starting_after")
    if ending_before is not None:
        before = await store.cursor_of(session, tenant.id, ending_before)
        if before is None:
            raise InvalidCursor(f"No job {ending_before}.", param="ending_before")
    rows, has_more = await store.list_for_tenant(
        session,
        tenant.id,
        limit=limit,
        status=status,
        model=model_id,
        created_after=created_after,
        created_before=created_before,
        after=after,
        before=before,
    )
    return list(rows), has_more


async def cancel_job(
    session: AsyncSession, job_store: JobStore, tenant: Tenant, job_id: uuid.UUID
) -> Job:
    """Queued here and never sent: canceled at once. Anywhere at fal: a cancel is requested and
    the worker asks fal; the final state is what fal decides (a run that finishes first stays
    succeeded)."""
    job = await store.lock_for_tenant(session, tenant.id, job_id)
    if job is None:
        raise JobNotFound(f"No job {job_id}.", param="job_id")
    if job.parent_id is not None:
        # A segment alone would leave its job with a hole: the job is what is canceled.
        raise JobNotCancelable(
            f"Job {job_id} is a segment of job {job.parent_id}: cancel that job.", param="job_id"
        )
    try:
        await job_store.write(session, job, lifecycle.CancelRequested(), owner=None)
    except lifecycle.NotApplicable as exc:
        raise JobNotCancelable(
            f"Job {job_id} is already {job.status.value}.", param="job_id"
        ) from exc
    return job


async def present(session: AsyncSession, jobs: list[Job], base_url: str) -> list[JobOut]:
    """Job resources, with their usage read in one query for the whole page (and a split job's
    segments, in one more)."""
    runs = await store.segments_of(
        session, [j.id for j in jobs if j.submit_state is SubmitState.split]
    )
    ids = [j.id for j in jobs] + [r.id for rs in runs.values() for r in rs]
    usage = await usage_service.usage_of_jobs(session, ids)
    out = []
    for j in jobs:
        if j.id in runs:
            segments, summed = present_segments(runs[j.id], usage)
            out.append(present_job(j, base_url, summed, segments))
        else:
            out.append(present_job(j, base_url, usage.get(j.id)))
    return out


async def fleet(session: AsyncSession, settings: Settings) -> FleetOut:
    """The operator's view of the gateway now (read-only, across tenants)."""
    now = utcnow()
    stale = settings.worker_stale_after
    workers = [
        FleetWorker(
            owner=b.owner, started_at=b.started_at, beat_at=b.beat_at, alive=now - b.beat_at < stale
        )
        for b in await store.beats(session)
    ]
    raw = await (await session.connection()).get_raw_connection()
    groups = await store.live_jobs(raw.driver_connection)
    live = []
    for status in (JobStatus.queued, JobStatus.starting, JobStatus.processing):
        mine = [g for g in groups if g.status == status.value]
        oldest = min((g.oldest for g in mine), default=None)
        live.append(
            FleetStatus(
                status=status,
                jobs=sum(g.jobs for g in mine),
                oldest_age_s=None if oldest is None else (now - oldest).total_seconds(),
            )
        )
    finished = await store.finished_since(session, now - timedelta(hours=1))
    return FleetOut(
        workers=workers,
        workers_alive=sum(w.alive for w in workers),
        live_jobs=live,
        finished_last_hour={s.value: n for s, n in finished.items()},
        fal_slots_in_use=sum(g.at_fal for g in groups),
        fal_slots=settings.fal_concurrency,
    )
