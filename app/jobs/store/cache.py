"""The result cache's reads of jobs: the stored success that answers a key (app.jobs.cache)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus


@dataclass(frozen=True)
class CacheSource:
    """A success that ran upstream and may answer a job with the same key."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    result: dict[str, Any]


async def find_source(
    session: AsyncSession,
    cache_key: str,
    *,
    tenant_id: uuid.UUID | None,
    completed_after: datetime | None,
    exclude: uuid.UUID | None = None,
) -> CacheSource | None:
    """The newest success with this key that ran upstream (a hit is never a source) and whose
    files are still there; the tenant's own (``tenant_id``), or any tenant's (None: the operator
    shares the cache). ``completed_after``: retention's horizon (None: kept forever). The row is
    not locked: what keeps the result is its file rows, which the caller share-locks next
    (app.files.service.planned_shares) — retention locks those rows before it marks the job, so
    locking the job here first could deadlock with it."""
    stmt = (
        select(Job.id, Job.tenant_id, Job.result)
        .where(
            Job.cache_key == cache_key,
            Job.status == JobStatus.succeeded,
            Job.cache_source_id.is_(None),
            Job.data_removed.is_(False),
            Job.result.is_not(None),
        )
        .order_by(Job.completed_at.desc())
        .limit(1)
    )
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    if completed_after is not None:
        stmt = stmt.where(Job.completed_at > completed_after)
    if exclude is not None:
        stmt = stmt.where(Job.id != exclude)
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    return CacheSource(row.id, row.tenant_id, row.result)
