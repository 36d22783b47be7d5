"""All SQL of the jobs domain. Every read starts from a statement already filtered by tenant."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Select, insert, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus, SubmitState

NOTIFY_CHANNEL = "foley_jobs"
# The payload of a wake-up for newly accepted jobs alone (workers then claim only queued jobs);
# every other payload names what happened to jobs that may already be at fal.
NEW_JOBS_PAYLOAD = "job"


def tenant_jobs(tenant_id: uuid.UUID) -> Select[tuple[Job]]:
    return select(Job).where(Job.tenant_id == tenant_id)


@dataclass(slots=True)
class NewJob:
    """A job as it is inserted: what accepting builds, stores and presents. A plain object, not an
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
            # due at once: the first worker to look claims it
            "next_action_at": self.created_at,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }


_JSONB_COLUMNS = frozenset({"input", "upstream_payload", "metadata"})


@functools.cache
def _insert_sql(columns: tuple[str, ...]) -> str:
    """The INSERT for NewJob.row()'s columns (always the same ones: built once). Values are
    always parameters."""
    return "INSERT INTO jobs ({}) VALUES ({})".format(  # noqa: S608
        ", ".join(columns),
        ", ".join(
            f"${i}::jsonb" if name in _JSONB_COLUMNS else f"${i}"
            for i, name in enumerate(columns, start=1)
        ),
    )


_INSERT_JOB = insert(Job.__table__)


async def insert_job(session: AsyncSession, job: NewJob) -> None:
    """Insert a new job in the session's transaction (with the budget reservation or the
    idempotency record it must commit with). One Core statement, compiled once."""
    await session.execute(_INSERT_JOB, job.row())


async def insert_job_alone(conn: asyncpg.Connection, job: NewJob) -> None:
    """Insert a new job that is all its acceptance writes: one statement, committed by itself,
    one round trip (see app.db.driver)."""
    row = job.row()
    await conn.execute(
        _insert_sql(tuple(row)),
        *[json.dumps(v) if c in _JSONB_COLUMNS else v for c, v in row.items()],
    )


async def get_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID, *, for_update: bool = False
) -> Job | None:
    stmt = tenant_jobs(tenant_id).where(Job.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


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
    """Newest first, keyset-paginated on (created_at, id). Returns (page, has_more)."""
    stmt = tenant_jobs(tenant_id)
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


async def notify_workers(session: AsyncSession, reason: str) -> None:
    """Wake the workers. Delivered at commit, so a worker never sees an uncommitted job."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": reason}
    )
