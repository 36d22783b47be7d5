"""A new job, and the tenant-scoped reads of jobs and their events."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Select, select, tuple_
from sqlalchemy import insert as sql_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import DriverPool
from app.models import Job, JobEvent, JobStatus, SubmitState
from app.usage import budgets

# --- a new job -----------------------------------------------------------------------------------


@dataclass(slots=True)
class NewJob:
    """A job as it is accepted: what accepting builds, stores and presents. A plain object, not an
    ORM instance: the accept path never loads it back, and instrumented attributes cost more
    than the rest of building it. Attribute names are the Job model's, so the presenter reads
    either; the fields after ``created_at`` are what a job that never ran has."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    model: str
    endpoint: str
    input: dict[str, Any]
    upstream_payload: dict[str, Any]
    job_metadata: dict[str, Any]
    input_file_id: uuid.UUID | None
    created_at: datetime
    estimated_cost_micros: int = 0
    reserved_micros: int = 0
    budget_period_start: datetime | None = None
    status: JobStatus = JobStatus.queued
    submit_state: SubmitState = SubmitState.pending
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    upstream_request_id: str | None = None
    queue_position: int | None = None
    input_probe: dict[str, Any] | None = None
    inference_s: float | None = None
    data_removed: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    cancel_after_at: datetime | None = None
    output_options: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    traceparent: str | None = None
    cache_requested: bool = False
    cache_key: str | None = None
    cache_source_id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None  # a segment of this job (app.jobs.steps.split)
    segment: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        """Column → value; the columns left out take their defaults (the job has not run)."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "model": self.model,
            "endpoint": self.endpoint,
            "status": self.status.value,
            "input": self.input,
            "upstream_payload": self.upstream_payload,
            "metadata": self.job_metadata,
            "input_file_id": self.input_file_id,
            "submit_state": self.submit_state.value,
            "submit_attempts": 0,
            "upstream_completed": False,
            "poll_count": 0,
            "estimated_cost_micros": self.estimated_cost_micros,
            "reserved_micros": self.reserved_micros,
            "budget_period_start": self.budget_period_start,
            "cancel_after_at": self.cancel_after_at,
            "output_options": self.output_options,
            "candidates": self.candidates,
            "attempts": self.attempts,
            "traceparent": self.traceparent,
            "cache_requested": self.cache_requested,
            "cache_key": self.cache_key,
            "parent_id": self.parent_id,
            "segment": self.segment,
            # due at once: the first worker to look claims it
            "next_action_at": self.created_at,
            "webhook_url": self.webhook_url,
            "webhook_events": self.webhook_events,
            "event_seq": 1,  # its creation, below
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }

    def created_event(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "tenant_id": self.tenant_id,
            "seq": 1,
            "type": "job.created",
            "data": {"status": JobStatus.queued.value, "model": self.model},
            "created_at": self.created_at,
            "job_created_at": self.created_at,
        }


_JSONB_COLUMNS = frozenset(
    {"input", "upstream_payload", "metadata", "output_options", "candidates", "attempts", "segment"}
)


def _json(value: Any) -> str:
    # pydantic's serializer: the JSON of the same value as json.dumps writes (jsonb keeps the
    # value, not the text) at a sixth of its cost; five per accepted job.
    return to_json(value).decode()


@functools.cache
def _insert_alone_sql(columns: tuple[str, ...]) -> str:
    """The job's INSERT and its creation event as one statement, which inserts nothing when the
    tenant has a budget (read in this very statement: no cache decides whether money is
    reserved). NewJob.row() has always the same columns: built once; values are parameters."""
    n = len(columns)
    values = ", ".join(
        f"${i}::jsonb" if name in _JSONB_COLUMNS else f"${i}"
        for i, name in enumerate(columns, start=1)
    )
    tenant = columns.index("tenant_id") + 1
    return (
        f"WITH job AS (INSERT INTO jobs ({', '.join(columns)}) "  # noqa: S608 (columns are ours)
        f"SELECT {values} WHERE {budgets.no_budget_sql(f'${tenant}')} "
        "RETURNING id, tenant_id, created_at) "
        "INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at, job_created_at) "
        f"SELECT id, tenant_id, 1, 'job.created', ${n + 1}::jsonb, created_at, created_at FROM job"
    )


async def insert_unless_budgeted(driver: DriverPool, job: NewJob) -> bool:
    """Insert a new job that is all its acceptance writes — one statement, one round trip,
    committed by itself — unless its tenant has a budget (then nothing is written and the caller
    inserts it with its reservation, ``insert``). True when inserted."""
    row = job.row()
    params = [_json(v) if c in _JSONB_COLUMNS and v is not None else v for c, v in row.items()]
    params.append(_json(job.created_event()["data"]))
    async with driver.acquire() as conn:
        status = await conn.execute(_insert_alone_sql(tuple(row)), *params)
    return status == "INSERT 0 1"


_INSERT_JOB = sql_insert(Job.__table__)
_INSERT_EVENT = sql_insert(JobEvent.__table__)


async def insert(session: AsyncSession, job: NewJob) -> None:
    """Insert a new job and its creation event in the session's transaction (with the budget
    reservation or the idempotency record it must commit with)."""
    await session.execute(_INSERT_JOB, job.row())
    await session.execute(_INSERT_EVENT, job.created_event())


# --- reads, tenant-scoped ------------------------------------------------------------------------


def _tenant_jobs(tenant_id: uuid.UUID) -> Select[tuple[Job]]:
    return select(Job).where(Job.tenant_id == tenant_id)


async def get_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> Job | None:
    return (await session.scalars(_tenant_jobs(tenant_id).where(Job.id == job_id))).first()


async def by_ids(session: AsyncSession, job_ids: Sequence[uuid.UUID]) -> list[Job]:
    """Jobs of any tenant, by id (those that exist): what a fan-out of their events presents."""
    if not job_ids:
        return []
    return list((await session.scalars(select(Job).where(Job.id.in_(job_ids)))).all())


async def lock_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> Job | None:
    """The tenant's job, row-locked for a transition in the caller's transaction."""
    stmt = _tenant_jobs(tenant_id).where(Job.id == job_id).with_for_update()
    return (await session.scalars(stmt.execution_options(populate_existing=True))).first()


async def list_for_tenant(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    status: JobStatus | None = None,
    model: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[Sequence[Job], bool]:
    """Newest first, keyset-paginated on (created_at, id). Returns (page, has_more). A split
    job's segments are not listed: their job shows them."""
    stmt = _tenant_jobs(tenant_id).where(Job.parent_id.is_(None))
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if model is not None:
        stmt = stmt.where(Job.model == model)
    if created_after is not None:
        stmt = stmt.where(Job.created_at > created_after)
    if created_before is not None:
        stmt = stmt.where(Job.created_at < created_before)
    key = tuple_(Job.created_at, Job.id)
    if before is not None:
        # ending_before: the page just newer than the cursor, read oldest-first then flipped.
        stmt = stmt.where(key > tuple_(*before)).order_by(Job.created_at.asc(), Job.id.asc())
        rows = list((await session.scalars(stmt.limit(limit + 1))).all())
        has_more = len(rows) > limit
        return list(reversed(rows[:limit])), has_more
    if after is not None:
        stmt = stmt.where(key < tuple_(*after))
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(stmt)).all())
    return rows[:limit], len(rows) > limit


async def cursor_of(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> tuple[datetime, uuid.UUID] | None:
    stmt = select(Job.created_at, Job.id).where(Job.tenant_id == tenant_id, Job.id == job_id)
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def events_for_tenant(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    after_seq: int = 0,
    limit: int = 100,
    job_created_at: datetime | None = None,
) -> tuple[Sequence[JobEvent], bool]:
    """A job's events in order, after ``after_seq``. Returns (page, has_more). With the job's
    ``created_at`` the read touches the one partition holding them, not every month's."""
    stmt = (
        select(JobEvent)
        .where(JobEvent.tenant_id == tenant_id, JobEvent.job_id == job_id)
        .where(JobEvent.seq > after_seq)
        .order_by(JobEvent.seq)
        .limit(limit + 1)
    )
    if job_created_at is not None:
        stmt = stmt.where(JobEvent.job_created_at == job_created_at)
    rows = list((await session.scalars(stmt)).all())
    return rows[:limit], len(rows) > limit


async def known_request_ids(session: AsyncSession, request_ids: set[str]) -> set[str]:
    """Which of these fal requests are already jobs' own."""
    if not request_ids:
        return set()
    rows = await session.scalars(
        select(Job.upstream_request_id).where(Job.upstream_request_id.in_(request_ids))
    )
    return {r for r in rows if r is not None}
