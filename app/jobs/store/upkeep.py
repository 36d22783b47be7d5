"""The housekeeping's writes to jobs: retention's marks, usage that waited for a price, the
look at fal a database outage calls for, and the months of ``job_events`` made ahead."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import DriverPool
from app.models import Job, JobStatus
from app.usage import ledger

# job_events is partitioned by month of its jobs' creation (migration 0011): the months made
# ahead of the current one, so a job is never created in a month without its partition (its
# events would land in the DEFAULT partition, which then blocks making that month's).
EVENT_PARTITIONS_AHEAD = 2
# pg_try_advisory_xact_lock key: one worker makes partitions at a time (the others skip).
_PARTITIONS_LOCK = 72190003


def _months(now: datetime, ahead: int) -> list[datetime]:
    year, month = now.astimezone(UTC).year, now.astimezone(UTC).month
    out = []
    for i in range(ahead + 1):
        y, m = divmod(month - 1 + i, 12)
        out.append(datetime(year + y, m + 1, 1, tzinfo=UTC))
    return out


async def add_event_partitions(
    session: AsyncSession, now: datetime, ahead: int = EVENT_PARTITIONS_AHEAD
) -> list[str]:
    """Make the ``job_events`` partitions of ``now``'s month and the ``ahead`` next that do not
    exist yet; their names. Making one locks the parent table for a moment: it waits at most
    2 s for that lock (a long transaction holding it only puts this off to the next round),
    and only one worker does it at a time (another skips the round)."""
    if not await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _PARTITIONS_LOCK}
    ):
        return []
    await session.execute(text("SELECT set_config('lock_timeout', '2s', true)"))
    made = []
    for month in _months(now, ahead):
        if await session.scalar(text("SELECT job_events_add_partition(:m)"), {"m": month}):
            made.append(f"job_events_y{month.year:04d}m{month.month:02d}")
    return made


# Jobs at fal become due now, unless a step holds them (its own next look is already planned).
_LOOK_AGAIN = """
    UPDATE jobs SET next_action_at = statement_timestamp()
    WHERE status IN ('starting', 'processing')
      AND next_action_at > statement_timestamp()
      AND (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp())
"""


async def look_again_at_fal(driver: DriverPool) -> int:
    """After the database was unreachable: what fal reported meanwhile (webhooks answered 503
    until fal gave up, status streams that could not write) is lost, and the jobs it finished
    would hold their slots until their next poll, up to the poll interval later. Every job at
    fal is looked at now instead: one status request each, at most the account's concurrency.
    Only the time of the next look moves; what is done then is the lifecycle's decision."""
    async with driver.acquire() as conn:
        status = await conn.execute(_LOOK_AGAIN)
    return int(status.split()[-1])


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
