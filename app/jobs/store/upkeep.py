"""The housekeeping's writes to jobs: retention's marks, usage that waited for a price."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus
from app.usage import ledger


async def mark_data_removed(
    session: AsyncSession, job_ids: set[uuid.UUID], upload_ids: list[uuid.UUID]
) -> None:
    """Retention deleted these jobs' outputs, or the uploads these jobs read."""
    if job_ids:
        await session.execute(update(Job).where(Job.id.in_(job_ids)).values(data_removed=True))
    if upload_ids:
        await session.execute(
            update(Job).where(Job.input_file_id.in_(upload_ids)).values(data_removed=True)
        )


async def settle_blocked(session: AsyncSession, *, bill_422: bool, limit: int = 500) -> int:
    """Finished jobs whose usage waited for a price: settle them now (a price was added)."""
    stmt = (
        select(Job)
        .where(Job.usage_settled.is_(False), Job.status.in_(_TERMINAL), Job.id.in_(_UNPRICED))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    done = 0
    for job in (await session.scalars(stmt)).all():
        outcome = await ledger.blocked_outcome(session, job)
        if outcome is not None and await ledger.settle_job(
            session, job, outcome, bill_422=bill_422
        ):
            job.usage_settled = True
            job.reserved_micros = 0
            done += 1
    return done


_TERMINAL = [s.value for s in JobStatus if s.terminal]
_UNPRICED = ledger.unpriced_job_ids()
