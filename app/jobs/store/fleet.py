"""Read-only counts across tenants for the operator's fleet view (``GET /v1/admin/fleet``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus, SubmitState
from app.models.job import TERMINAL_STATUSES

_LIVE = [s for s in JobStatus if s not in TERMINAL_STATUSES]


@dataclass(frozen=True)
class StatusCount:
    status: JobStatus
    jobs: int
    oldest_created_at: datetime | None


async def live_by_status(session: AsyncSession) -> list[StatusCount]:
    """Unfinished jobs by status, with the oldest's creation (how long the queue has waited)."""
    stmt = (
        select(Job.status, func.count(), func.min(Job.created_at))
        .where(Job.status.in_(_LIVE))
        .group_by(Job.status)
    )
    found = {row[0]: (row[1], row[2]) for row in (await session.execute(stmt)).all()}
    return [StatusCount(s, *found.get(s, (0, None))) for s in _LIVE]


async def finished_since(session: AsyncSession, since: datetime) -> dict[JobStatus, int]:
    stmt = (
        select(Job.status, func.count())
        .where(Job.status.in_(list(TERMINAL_STATUSES)), Job.completed_at >= since)
        .group_by(Job.status)
    )
    return {row[0]: row[1] for row in (await session.execute(stmt)).all()}


async def slots_in_use(session: AsyncSession) -> int:
    """Requests holding one of fal's slots: sent (or being sent) and not reported complete, as
    the dispatch claim counts them (claims.py)."""
    stmt = select(func.count()).where(
        Job.status.in_(_LIVE),
        Job.submit_state != SubmitState.pending,
        Job.upstream_completed.is_(False),
    )
    return int((await session.scalar(stmt)) or 0)
