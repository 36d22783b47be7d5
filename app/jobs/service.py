"""Accept, read, list and cancel jobs. The worker side of the life cycle is in app.worker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog.registry import CATALOG, ModelSpec
from app.jobs import repository
from app.jobs.presenter import present_job
from app.jobs.schemas import JobCreate, JobOut
from app.kit.clock import utcnow
from app.kit.idempotency import IdempotencyGuard, StoredResponse, request_fingerprint
from app.kit.problems import BadRequest, Conflict, InputValidationError, NotFound, validation_errors
from app.models import Job, JobStatus, SubmitState, Tenant

MAX_METADATA_KEYS = 50


class JobNotFound(NotFound):
    code = "job_not_found"


class UnknownModel(InputValidationError):
    def __init__(self, name: str) -> None:
        super().__init__(
            [
                {
                    "param": "model",
                    "code": "unknown_model",
                    "message": f"unknown model {name!r}; see GET /v1/models",
                }
            ]
        )
        self.code = "unknown_model"  # type: ignore[misc]


class JobNotCancelable(Conflict):
    code = "job_not_cancelable"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


@dataclass(frozen=True)
class Accepted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    replayed: bool


def resolve_model(name: str) -> ModelSpec:
    spec = CATALOG.resolve(name)
    if spec is None:
        raise UnknownModel(name)
    return spec


def build_job(tenant_id: uuid.UUID, body: JobCreate) -> Job:
    """Validate against the model's schema and build the row (nothing is written)."""
    spec = resolve_model(body.model)
    try:
        normalized = spec.validate_input(body.input)
    except ValidationError as exc:
        raise InputValidationError(validation_errors(exc.errors(), prefix="input")) from exc
    if len(body.metadata) > MAX_METADATA_KEYS:
        raise InputValidationError(
            [
                {
                    "param": "metadata",
                    "code": "too_many_keys",
                    "message": f"at most {MAX_METADATA_KEYS} keys",
                }
            ]
        )
    now = utcnow()
    return Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        model=spec.id,
        endpoint=spec.endpoint,
        status=JobStatus.queued,
        input=normalized.model_dump(mode="json", exclude_none=True),
        upstream_payload=spec.upstream_payload(normalized),
        job_metadata=dict(body.metadata),
        logs=[],
        submit_state=SubmitState.pending,
        submit_attempts=0,
        upstream_completed=False,
        poll_count=0,
        next_action_at=now,
        created_at=now,
        updated_at=now,
    )


async def accept_job(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant: Tenant,
    body: JobCreate,
    *,
    base_url: str,
    path: str,
    idempotency_key: str | None,
    idempotency_retention: timedelta,
) -> Accepted:
    job = build_job(tenant.id, body)  # validation first: a bad body never claims a key
    guard = None
    if idempotency_key is not None:
        guard = IdempotencyGuard(
            sessionmaker,
            tenant_id=tenant.id,
            key=idempotency_key,
            method="POST",
            path=path,
            fingerprint=request_fingerprint("POST", path, body.model_dump(mode="json")),
            retention=idempotency_retention,
        )
        stored = await guard.claim()
        if stored is not None:
            return Accepted(stored.status, stored.body, stored.headers, replayed=True)
    try:
        session.add(job)
        await session.flush()
        await repository.notify_workers(session)
        out = present_job(job, base_url).model_dump(mode="json")
        headers = {"Location": out["urls"]["self"]}
        if guard is not None:
            await guard.record(session, StoredResponse(202, out, headers))
    except BaseException:
        if guard is not None:
            await guard.release()
        raise
    return Accepted(202, out, headers, replayed=False)


async def get_job(session: AsyncSession, tenant: Tenant, job_id: uuid.UUID) -> Job:
    job = await repository.get_for_tenant(session, tenant.id, job_id)
    if job is None:
        raise JobNotFound(f"No job {job_id}.", param="job_id")
    return job


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
        after = await repository.cursor_of(session, tenant.id, starting_after)
        if after is None:
            raise InvalidCursor(f"No job {starting_after}.", param="starting_after")
    if ending_before is not None:
        before = await repository.cursor_of(session, tenant.id, ending_before)
        if before is None:
            raise InvalidCursor(f"No job {ending_before}.", param="ending_before")
    rows, has_more = await repository.list_for_tenant(
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


async def cancel_job(session: AsyncSession, tenant: Tenant, job_id: uuid.UUID) -> Job:
    """Queued here and never sent: canceled at once. Anywhere at fal: a cancel is requested and
    the worker asks fal; the final state is what fal decides (a run that finishes first stays
    succeeded)."""
    job = await repository.get_for_tenant(session, tenant.id, job_id, for_update=True)
    if job is None:
        raise JobNotFound(f"No job {job_id}.", param="job_id")
    if job.status.terminal:
        raise JobNotCancelable(f"Job {job_id} is already {job.status.value}.", param="job_id")
    now = utcnow()
    if job.status is JobStatus.queued and job.submit_state is SubmitState.pending:
        job.status = JobStatus.canceled
        job.completed_at = now
        job.next_action_at = None
        job.error = {"code": "canceled", "message": "Canceled before it was sent upstream."}
    elif job.cancel_requested_at is None:
        job.cancel_requested_at = now
        job.next_action_at = now
        await repository.notify_workers(session)
    await session.flush()
    return job


def present(job: Job, base_url: str) -> JobOut:
    return present_job(job, base_url)
