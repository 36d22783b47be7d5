"""Workers' heartbeats: how a claim tells a lease whose owner died from one whose owner is busy.

A lease (60 s by default) is how long a worker may take over a step before anyone doubts it;
waiting it out is right while fal may still be running the job, but not once fal reported the
job complete: then the job holds no slot at fal, its result is waiting, and only a dead worker
is keeping it. Each worker beats (``beat``) every ``stale_after / 5`` while it runs, and a claim
takes a completed job whose lease holder has not beaten for ``stale_after`` (a few seconds; see
claims.py). That is safe with a live worker wrongly judged dead (stalled longer than that):
what is left of a completed job — read its result, store the files, settle — sends nothing to
fal, and every write of a step is guarded by the lease owner, so the stalled worker's step
writes nothing once its lease is taken.

A worker with no beat at all (one that never beat: an older version, a test's claim) is never
judged: its leases run their course. Times are the database's, as the leases'.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import DriverPool
from app.models import WorkerBeat

BEATS_PER_STALE = 5

_BEAT = """
    INSERT INTO worker_beats (owner, started_at, beat_at)
    VALUES ($1, statement_timestamp(), statement_timestamp())
    ON CONFLICT (owner) DO UPDATE SET beat_at = statement_timestamp()
"""


def beat_period(stale_after: timedelta) -> float:
    """Seconds between a worker's beats: several beats may be late before it counts as dead."""
    return stale_after.total_seconds() / BEATS_PER_STALE


async def beat(driver: DriverPool, owner: str) -> None:
    async with driver.acquire() as conn:
        await conn.execute(_BEAT, owner)


async def forget(driver: DriverPool, owner: str) -> None:
    """A worker that stopped cleanly (its leases given back) beats no more."""
    async with driver.acquire() as conn:
        await conn.execute("DELETE FROM worker_beats WHERE owner = $1", owner)


async def workers_alive(conn: asyncpg.Connection, stale_after: timedelta) -> int:
    """Workers that beat within ``stale_after`` (the operator's gauge)."""
    count = await conn.fetchval(
        "SELECT count(*) FROM worker_beats WHERE beat_at >= statement_timestamp() - $1::interval",
        stale_after,
    )
    return int(count)


async def prune_beats(session: AsyncSession, older_than: timedelta) -> int:
    """Beats of workers long gone (killed: they never said goodbye). Housekeeping's."""
    result = await session.execute(
        delete(WorkerBeat).where(WorkerBeat.beat_at < func.statement_timestamp() - older_than)
    )
    return result.rowcount or 0


async def beats(session: AsyncSession) -> list[WorkerBeat]:
    """Every worker's last beat, latest first: what the operator's fleet view shows."""
    stmt = select(WorkerBeat).order_by(WorkerBeat.beat_at.desc())
    return list((await session.scalars(stmt)).all())
