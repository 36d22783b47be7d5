"""Retention: after ``FOLEY_RETENTION_DAYS`` a tenant's uploads and job outputs are deleted from
storage by the worker. The rows stay (size, hash, probe: what there was), marked deleted; the
job says ``data_removed: true`` (Replicate's convention) and the file endpoints answer 410.

Retention is by row: a result-cache hit's rows point at its source's objects (app.jobs.cache),
and each row expires on its own date. An object is deleted with the last present row that uses
it, so removing one job's files never takes another's."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import store
from app.kit.clock import utcnow
from app.models import StoredFile
from app.storage import Storage

log = structlog.get_logger(__name__)
BATCH = 200


async def remove_expired(session: AsyncSession, storage: Storage, retention_days: float) -> int:
    cutoff = utcnow() - timedelta(days=retention_days)
    files = (
        await session.scalars(
            select(StoredFile)
            .where(StoredFile.created_at < cutoff, StoredFile.deleted_at.is_(None))
            .order_by(StoredFile.created_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not files:
        return 0
    now = utcnow()
    ids = [f.id for f in files]
    # Objects a present row outside this batch still uses (a cache hit's, or its source's).
    kept = set(
        (
            await session.scalars(
                select(StoredFile.storage_key).where(
                    StoredFile.storage_key.in_({f.storage_key for f in files}),
                    StoredFile.deleted_at.is_(None),
                    StoredFile.id.not_in(ids),
                )
            )
        ).all()
    )
    for f in files:
        if f.storage_key not in kept:
            await storage.delete(f.storage_key)  # idempotent: a retry after a crash is harmless
        f.deleted_at = now
    await store.mark_data_removed(
        session,
        job_ids={f.job_id for f in files if f.job_id is not None},
        upload_ids=[f.id for f in files if f.job_id is None],
    )
    log.info("retention removed files", count=len(files), objects_kept=len(kept))
    return len(files)
