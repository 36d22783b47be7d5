"""Claiming work from the jobs table (the queue) with leases.

A job is due when ``next_action_at <= now()``, it is live, and nobody holds an unexpired lease on
it. Claims use ``FOR UPDATE SKIP LOCKED`` so any number of workers can claim concurrently without
two taking one job; the lease (not the row lock, which ends with the claim's transaction) is what
keeps the job ours while we work on it, and its expiry is how a dead worker's jobs come back.

Dispatch claims (jobs not yet sent to fal) are also bounded by the fal account's concurrency:
they run under a transaction-level advisory lock, so the count of requests in flight and the
claim are one decision even with many workers.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

DISPATCH_LOCK = 72190002

_CLAIM_FOLLOW_UP = text(
    """
    UPDATE jobs SET lease_owner = :owner, lease_expires_at = now() + :lease
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          AND NOT (status = 'queued' AND submit_state = 'pending')
          AND next_action_at <= now()
          AND (lease_expires_at IS NULL OR lease_expires_at < now())
        ORDER BY next_action_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
    """
)

_IN_FLIGHT = text(
    """
    SELECT count(*) FROM jobs
    WHERE status IN ('queued', 'starting', 'processing')
      AND (submit_state <> 'pending'
           OR (lease_expires_at IS NOT NULL AND lease_expires_at > now()))
    """
)

_CLAIM_DISPATCH = text(
    """
    UPDATE jobs SET lease_owner = :owner, lease_expires_at = now() + :lease
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'queued' AND submit_state = 'pending'
          AND next_action_at <= now()
          AND (lease_expires_at IS NULL OR lease_expires_at < now())
        ORDER BY created_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
    """
)


async def claim_follow_ups(
    session: AsyncSession, owner: str, lease: timedelta, limit: int
) -> list[uuid.UUID]:
    """Jobs already at (or possibly at) fal that need a poll, a finalize or a cancel."""
    if limit <= 0:
        return []
    rows = await session.execute(_CLAIM_FOLLOW_UP, {"owner": owner, "lease": lease, "limit": limit})
    return [r[0] for r in rows]


async def claim_dispatches(
    session: AsyncSession, owner: str, lease: timedelta, limit: int, fal_concurrency: int
) -> list[uuid.UUID]:
    """Queued jobs to send to fal, no more than the account's free concurrency."""
    if limit <= 0:
        return []
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DISPATCH_LOCK})
    in_flight = (await session.execute(_IN_FLIGHT)).scalar_one()
    room = min(limit, fal_concurrency - in_flight)
    if room <= 0:
        return []
    rows = await session.execute(_CLAIM_DISPATCH, {"owner": owner, "lease": lease, "limit": room})
    return [r[0] for r in rows]


async def extend_leases(
    session: AsyncSession, owner: str, lease: timedelta, job_ids: list[uuid.UUID]
) -> None:
    if job_ids:
        await session.execute(
            text(
                "UPDATE jobs SET lease_expires_at = now() + :lease "
                "WHERE id = ANY(:ids) AND lease_owner = :owner"
            ),
            {"lease": lease, "ids": job_ids, "owner": owner},
        )
