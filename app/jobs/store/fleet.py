"""Read-only counts across tenants for the operator's fleet view (``GET /v1/admin/fleet``); its
live jobs are app.jobs.store.overview's, which the gauges read too."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus
from app.models.job import TERMINAL_STATUSES


async def finished_since(session: AsyncSession, since: datetime) -> dict[JobStatus, int]:
    stmt = (
        select(Job.status, func.count())
        .where(Job.status.in_(list(TERMINAL_STATUSES)), Job.completed_at >= since)
        .group_by(Job.status)
    )
    return {row[0]: row[1] for row in (await session.execute(stmt)).all()}
