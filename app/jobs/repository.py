"""All SQL of the jobs domain. Every read starts from a statement already filtered by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, insert, inspect, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus

NOTIFY_CHANNEL = "foley_jobs"


def tenant_jobs(tenant_id: uuid.UUID) -> Select[tuple[Job]]:
    return select(Job).where(Job.tenant_id == tenant_id)


_JOB_COLUMNS = [(attr.key, attr.columns[0].name) for attr in inspect(Job).column_attrs]
_INSERT_JOB = insert(Job.__table__)


async def insert_job(session: AsyncSession, job: Job) -> None:
    """Insert a new job with one Core statement (the accept path's hot spot: the ORM's unit of
    work costs more than the insert itself). Unset columns take their defaults."""
    values = {}
    for key, column in _JOB_COLUMNS:
        value = getattr(job, key)
        if value is not None:
            values[column] = value
    # Values as parameters, not in the statement: the compiled INSERT is cached and reused.
    await session.execute(_INSERT_JOB, values)


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


async def notify_workers(session: AsyncSession, reason: str = "job") -> None:
    """Wake the workers. Delivered at commit, so a worker never sees an uncommitted job."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": reason}
    )
