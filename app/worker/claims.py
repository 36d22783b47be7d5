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

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from app.models import Job

DISPATCH_LOCK = 72190002

_JOB_COLUMNS = list(Job.__table__.columns)


def _claiming(sql: str) -> ExecutableReturnsRows:
    """A claim that answers the claimed rows as ``Job`` objects: the claim is also the step's
    read of the job (one transaction instead of two). The RETURNING list is spelled from the
    table, in its order, because textual columns are matched to the ORM's by position."""
    returning = ", ".join(f'jobs."{c.name}"' for c in _JOB_COLUMNS)
    return select(Job).from_statement(
        text(sql.replace("RETURNING *", f"RETURNING {returning}")).columns(*_JOB_COLUMNS)
    )


_CLAIM_FOLLOW_UP = _claiming(
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
    RETURNING *
    """
)

# Fair share: each tenant's queued jobs are numbered oldest first (rn); a job's turn is its
# tenant's jobs already at fal plus rn, divided by the tenant's weight. Taking the lowest turns
# first interleaves tenants round-robin (weighted), so a tenant with 1,000 queued jobs cannot
# starve one with a single job, and a tenant never exceeds its own in-flight cap. The account's
# free concurrency (room) bounds the whole claim.
_CLAIM_DISPATCH = _claiming(
    """
    WITH in_flight AS (
        SELECT tenant_id, count(*) AS n FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          AND (submit_state <> 'pending'
               OR (lease_expires_at IS NOT NULL AND lease_expires_at > statement_timestamp()))
        GROUP BY tenant_id
    ),
    room AS (
        SELECT greatest(0, least(:limit, :fal_concurrency - coalesce(sum(n), 0))) AS n
        FROM in_flight
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
        LIMIT (SELECT n FROM room)
    )
    UPDATE jobs SET lease_owner = :owner, lease_expires_at = statement_timestamp() + :lease
    WHERE id IN (SELECT id FROM jobs WHERE id IN (SELECT id FROM picked) FOR UPDATE SKIP LOCKED)
    RETURNING *
    """
)


async def claim_follow_ups(
    session: AsyncSession, owner: str, lease: timedelta, limit: int
) -> list[Job]:
    """Jobs already at (or possibly at) fal that need a poll, a finalize or a cancel."""
    if limit <= 0:
        return []
    jobs = await session.scalars(_CLAIM_FOLLOW_UP, {"owner": owner, "lease": lease, "limit": limit})
    return list(jobs)


async def claim_dispatches(
    session: AsyncSession,
    owner: str,
    lease: timedelta,
    limit: int,
    fal_concurrency: int,
    default_tenant_cap: int | None = None,
) -> list[Job]:
    """Queued jobs to send to fal: no more than the account's free concurrency, each tenant
    within its own in-flight cap, tenants interleaved by weighted fair share."""
    if limit <= 0:
        return []
    # The claim only takes leases, so its commit need not wait for the WAL flush: lost in a
    # Postgres crash, it is as if never made (the job is unleased, due, and claimed again, still
    # 'pending'). Whatever the step then writes commits with the usual flush, which also makes
    # this claim durable (the WAL is flushed in order). One statement with the lock: no extra
    # round trip on the path to a submit. The lock is taken before, not inside, the claim: the
    # claim's snapshot must see the claims committed by whoever held the lock before us.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:k), set_config('synchronous_commit', 'off', true)"),
        {"k": DISPATCH_LOCK},
    )
    jobs = await session.scalars(
        _CLAIM_DISPATCH,
        {
            "owner": owner,
            "lease": lease,
            "limit": limit,
            "fal_concurrency": fal_concurrency,
            "default_cap": default_tenant_cap,
        },
    )
    return list(jobs)


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
