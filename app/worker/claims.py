"""Claiming work from the jobs table (the queue) with leases.

A job is due when its ``next_action_at`` has passed, it is live, and nobody holds an unexpired
lease on it. Claims use ``FOR UPDATE SKIP LOCKED`` so any number of workers can claim at once
without two taking one job; the lease (not the row lock, which ends with the claim's
transaction) is what keeps the job ours while we work on it, and its expiry is how a dead
worker's jobs come back.

Times are ``statement_timestamp()``, not ``now()`` (the transaction's start), so a claim is
judged at the moment it runs.

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
    UPDATE jobs SET lease_owner = :owner, lease_expires_at = statement_timestamp() + :lease
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          AND NOT (status = 'queued' AND submit_state = 'pending')
          AND next_action_at <= statement_timestamp()
          AND (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp())
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
           OR (lease_expires_at IS NOT NULL AND lease_expires_at > statement_timestamp()))
    """
)

# Fair share: each tenant's queued jobs are numbered oldest first (rn); a job's turn is its
# tenant's jobs already at fal plus rn, divided by the tenant's weight. Taking the lowest turns
# first interleaves tenants round-robin (weighted), so a tenant with 1,000 queued jobs cannot
# starve one with a single job, and a tenant never exceeds its own in-flight cap.
_CLAIM_DISPATCH = text(
    """
    WITH in_flight AS (
        SELECT tenant_id, count(*) AS n FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          AND (submit_state <> 'pending'
               OR (lease_expires_at IS NOT NULL AND lease_expires_at > statement_timestamp()))
        GROUP BY tenant_id
    ),
    queued AS (
        SELECT id, tenant_id,
               row_number() OVER (PARTITION BY tenant_id ORDER BY created_at, id) AS rn
        FROM jobs
        WHERE status = 'queued' AND submit_state = 'pending'
          AND next_action_at <= statement_timestamp()
          AND (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp())
    ),
    picked AS (
        SELECT q.id
        FROM queued q
        JOIN tenants t ON t.id = q.tenant_id
        LEFT JOIN in_flight f ON f.tenant_id = q.tenant_id
        WHERE q.rn <= :limit
          AND coalesce(f.n, 0) + q.rn
              <= coalesce(t.max_in_flight, CAST(:default_cap AS integer), 2147483647)
        ORDER BY (coalesce(f.n, 0) + q.rn) / t.weight, q.rn, q.id
        LIMIT :limit
    )
    UPDATE jobs SET lease_owner = :owner, lease_expires_at = statement_timestamp() + :lease
    WHERE id IN (SELECT id FROM jobs WHERE id IN (SELECT id FROM picked) FOR UPDATE SKIP LOCKED)
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
    session: AsyncSession,
    owner: str,
    lease: timedelta,
    limit: int,
    fal_concurrency: int,
    default_tenant_cap: int | None = None,
) -> list[uuid.UUID]:
    """Queued jobs to send to fal: no more than the account's free concurrency, each tenant
    within its own in-flight cap, tenants interleaved by weighted fair share."""
    if limit <= 0:
        return []
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DISPATCH_LOCK})
    in_flight = (await session.execute(_IN_FLIGHT)).scalar_one()
    room = min(limit, fal_concurrency - in_flight)
    if room <= 0:
        return []
    rows = await session.execute(
        _CLAIM_DISPATCH,
        {"owner": owner, "lease": lease, "limit": room, "default_cap": default_tenant_cap},
    )
    return [r[0] for r in rows]


async def extend_leases(
    session: AsyncSession, owner: str, lease: timedelta, job_ids: list[uuid.UUID]
) -> None:
    if job_ids:
        await session.execute(
            text(
                "UPDATE jobs SET lease_expires_at = statement_timestamp() + :lease "
                "WHERE id = ANY(:ids) AND lease_owner = :owner"
            ),
            {"lease": lease, "ids": job_ids, "owner": owner},
        )
