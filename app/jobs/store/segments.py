"""A split job and its segments (app.jobs.lifecycle.segments): reading a job's segments, and
the wake-up (with its event) that a segment's end gives the job it is part of."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus


async def segments_of(
    session: AsyncSession, parent_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Job]]:
    """Every run of the segments of these split jobs, by job, in order of segment then try."""
    if not parent_ids:
        return {}
    stmt = (
        select(Job)
        .where(Job.parent_id.in_(parent_ids))
        .order_by(
            Job.parent_id,
            Job.segment["index"].as_integer(),
            Job.segment["try"].as_integer(),
        )
    )
    out: dict[uuid.UUID, list[Job]] = {p: [] for p in parent_ids}
    for job in (await session.scalars(stmt)).all():
        assert job.parent_id is not None
        out[job.parent_id].append(job)
    return out


# A segment ended: the job it is part of is due now, and its event log says so (the caller
# following that job sees each segment end). Its row lock waits for a step of that job still
# deciding (it read the segments under that lock): this wake-up then lands after that step's own
# next_action_at, never under it, and the event takes the seq after that step's events.
_WAKE_PARENT = text("""
    WITH parent AS (
        UPDATE jobs SET next_action_at = statement_timestamp(), event_seq = event_seq + 1,
            updated_at = now()
        WHERE id = :parent AND status IN ('queued', 'starting', 'processing')
        RETURNING id, tenant_id, event_seq, created_at
    )
    INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at, job_created_at)
    SELECT id, tenant_id, event_seq, 'job.segment_ended', CAST(:data AS jsonb),
        statement_timestamp(), created_at
    FROM parent
""")


async def wake_parent(session: AsyncSession, segment: Job) -> None:
    """In the transaction of ``segment``'s end: its job is due now, with the event that says so
    (the caller NOTIFYs the workers)."""
    assert segment.parent_id is not None
    data = {
        "index": (segment.segment or {}).get("index"),
        "job_id": str(segment.id),
        "status": JobStatus(segment.status).value,
        "request_id": segment.upstream_request_id,
    }
    await session.execute(_WAKE_PARENT, {"parent": segment.parent_id, "data": json.dumps(data)})
