"""Claims and leases: the jobs table is the queue."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import Enum
from sqlalchemy.orm import configure_mappers

from app.db.driver import DriverPool
from app.models import Job

DISPATCH_LOCK = 72190002


# --- claims and leases (the worker) --------------------------------------------------------------
# A job is due when its ``next_action_at`` has passed, it is live, and nobody holds an unexpired
# lease on it. Claims use ``FOR UPDATE SKIP LOCKED`` so any number of workers can claim at once
# without two taking one job; the lease (not the row lock, which ends with the claim's
# transaction) keeps the job ours while a step works on it, and its expiry is how a dead worker's
# jobs come back (a completed job at once: its owner stopped beating, liveness.py). Times are
# ``statement_timestamp()``: a claim is judged when it runs.


def _decoder(column: Any) -> Any:
    # JSON comes back decoded (the dialect's codecs); enums as their values.
    if isinstance(column.type, Enum) and column.type.enum_class is not None:
        enum_class = column.type.enum_class
        return lambda v: None if v is None else enum_class(v)
    return None


_FIELDS = [
    (column.name, Job.__mapper__.get_property_by_column(column).key, _decoder(column))
    for column in Job.__table__.columns
]
COLUMNS = ", ".join(f'jobs."{name}"' for name, _, _ in _FIELDS)


def job_from_row(row: asyncpg.Record) -> Job:
    """A claimed row as a ``Job`` (not attached to any session): the step's read of the job,
    its values as loaded (not as changes). Built the way the ORM builds a loaded row: through
    the constructor every attribute was a tracked change, ~60 µs a row, several rows a job."""
    job = _new_job()()
    values = job.__dict__
    for name, key, decode in _FIELDS:
        value = row[name]
        values[key] = value if decode is None else decode(value)
    return job


@functools.cache
def _new_job() -> Callable[[], Job]:
    # The constructor configures the mappers when it first runs; the bare instance does not, and
    # an unconfigured mapper's attributes cannot be read (the claim may be the process's first
    # use of the ORM).
    configure_mappers()
    return Job.__mapper__.class_manager.new_instance


def _owner_silent(stale_after: str) -> str:
    """The job's lease holder has not beaten for ``stale_after`` (a statement's parameter): a
    dead worker (liveness.py)."""
    return f"""EXISTS (
        SELECT 1 FROM worker_beats b
        WHERE b.owner = jobs.lease_owner
          AND b.beat_at < statement_timestamp() - {stale_after}::interval)"""  # noqa: S608 (a parameter's placeholder, "$n")


_CLAIM_FOLLOW_UP = f"""
    UPDATE jobs SET lease_owner = $1, lease_expires_at = statement_timestamp() + $2::interval
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          -- a job never sent is the dispatch's, unless its Cancel-After passed (then it is
          -- aborted even while the account's concurrency keeps the dispatch from taking it)
          AND (NOT (status = 'queued' AND submit_state = 'pending')
               OR cancel_after_at <= statement_timestamp())
          AND next_action_at <= statement_timestamp()
          AND (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp()
               -- fal reported it complete and its lease holder stopped beating: taken over at
               -- once, not after the lease (liveness.py says why that is safe)
               OR (upstream_completed AND {_owner_silent("$4")}))
        ORDER BY next_action_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {COLUMNS}
"""  # noqa: S608 (no value is spliced in: the RETURNING list is the table's own columns)

# Fair share: each tenant's queued jobs are numbered oldest first (rn); a job's turn is its
# tenant's jobs already at fal plus rn, divided by the tenant's weight. Taking the lowest turns
# first interleaves tenants round-robin (weighted), so a tenant with 1,000 queued jobs cannot
# starve one with a single job, and a tenant never exceeds its own in-flight cap. The account's
# free concurrency (room) bounds the whole claim.
# $1 owner, $2 lease, $3 limit, $4 the account's concurrency, $5 the default per-tenant cap,
# $6 how long a lease holder may be silent before it counts as dead (liveness.py).
_CLAIM_DISPATCH = f"""
    WITH in_flight AS (
        SELECT tenant_id, count(*) AS n FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          -- a split job holds no slot: its segments do, each as a job of its own
          AND submit_state <> 'split'
          AND (submit_state <> 'pending'
               OR (lease_expires_at > statement_timestamp() AND NOT {_owner_silent("$6")}))
          -- fal reported it complete (stream, poll or webhook): it holds no slot at fal any
          -- more, whoever still has to fetch its result
          AND NOT upstream_completed
        GROUP BY tenant_id
    ),
    room AS (
        SELECT greatest(0, least($3::integer, $4::integer - coalesce(sum(n), 0))) AS n
        FROM in_flight
    ),
    -- Due jobs not sent yet, whoever holds them (one whose holder dies is due again), and
    -- whether this claim may take each.
    unsent AS (
        SELECT id, tenant_id, created_at,
               -- a dead worker's claim is taken over at once: nothing of it reached fal
               -- ('pending' is written 'sending', under the lease, before a request leaves),
               -- and a worker wrongly judged dead can no longer mark it sending (its lease is
               -- gone)
               (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp()
                OR {_owner_silent("$6")}) AS free
        FROM jobs
        WHERE status = 'queued' AND submit_state = 'pending'
          AND next_action_at <= statement_timestamp()
    ),
    queued AS (
        SELECT id, tenant_id,
               row_number() OVER (PARTITION BY tenant_id ORDER BY created_at, id) AS rn
        FROM unsent WHERE free
    ),
    picked AS (
        SELECT q.id
        FROM queued q
        JOIN tenants t ON t.id = q.tenant_id
        LEFT JOIN in_flight f ON f.tenant_id = q.tenant_id
        WHERE q.rn <= $3::integer
          AND coalesce(f.n, 0) + q.rn
              <= coalesce(t.max_in_flight, $5::integer, 2147483647)
        ORDER BY (coalesce(f.n, 0) + q.rn) / t.weight, q.rn, q.id
        LIMIT (SELECT n FROM room)
    ),
    claimed AS (
        UPDATE jobs SET lease_owner = $1, lease_expires_at = statement_timestamp() + $2::interval
        WHERE id IN (SELECT id FROM jobs WHERE id IN (SELECT id FROM picked) FOR UPDATE SKIP LOCKED)
        RETURNING {COLUMNS}
    )
    -- One row per claimed job, each with how many unsent jobs the claim left; one row of NULLs
    -- with that count when it claimed none.
    SELECT claimed.*, left_waiting
    FROM (SELECT (SELECT count(*) FROM unsent) - (SELECT count(*) FROM picked) AS left_waiting) w
    LEFT JOIN claimed ON true
"""  # noqa: S608 (as above)


async def claim_follow_ups(
    driver: DriverPool,
    owner: str,
    lease: timedelta,
    limit: int,
    stale_after: timedelta,
) -> list[Job]:
    """Jobs already at (or possibly at) fal that need a look, a finalize or a cancel; with them,
    completed jobs leased to a worker that has not beaten for ``stale_after`` (a dead one). One
    statement, committed by itself."""
    if limit <= 0:
        return []
    async with driver.acquire() as conn:
        rows = await conn.fetch(_CLAIM_FOLLOW_UP, owner, lease, limit, stale_after)
    return [job_from_row(r) for r in rows]


@dataclass(frozen=True)
class DispatchClaim:
    """What a dispatch claim took, and whether it left due jobs unsent: held back by the
    account's free concurrency or their tenant's cap, past the claim's limit, or claimed by a
    worker that has not sent them yet (due again should it die)."""

    jobs: list[Job]
    left_waiting: bool


async def claim_dispatches(
    driver: DriverPool,
    owner: str,
    lease: timedelta,
    limit: int,
    fal_concurrency: int,
    default_tenant_cap: int | None,
    stale_after: timedelta,
) -> DispatchClaim:
    """Queued jobs to send to fal: no more than the account's free concurrency, each tenant
    within its own in-flight cap, tenants interleaved by weighted fair share. A queued job
    claimed by a worker that stopped beating for ``stale_after`` (killed before it sent
    anything) is neither counted in flight nor left waiting for its lease. The count of
    requests in flight and the claim are one decision even with many workers: they run under a
    transaction-level advisory lock."""
    if limit <= 0:
        return DispatchClaim([], left_waiting=True)
    async with driver.acquire() as conn, conn.transaction():
        # The claim only takes leases, so its commit need not wait for the WAL flush: lost in a
        # Postgres crash, it is as if never made (the job is unleased, due, and claimed again,
        # still 'pending'). Whatever the step then writes commits with the usual flush, which
        # also makes this claim durable (the WAL is flushed in order). The lock is taken before,
        # not inside, the claim: the claim's snapshot must see the claims committed by whoever
        # held the lock before us.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1), set_config('synchronous_commit', 'off', true)",
            DISPATCH_LOCK,
        )
        rows = await conn.fetch(
            _CLAIM_DISPATCH, owner, lease, limit, fal_concurrency, default_tenant_cap, stale_after
        )
    jobs = [job_from_row(r) for r in rows if r["id"] is not None]
    return DispatchClaim(jobs, left_waiting=rows[0]["left_waiting"] > 0)


async def extend_leases(
    driver: DriverPool, owner: str, lease: timedelta, job_ids: list[uuid.UUID]
) -> None:
    if not job_ids:
        return
    async with driver.acquire() as conn:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = statement_timestamp() + $1::interval "
            "WHERE id = ANY($2::uuid[]) AND lease_owner = $3",
            lease,
            job_ids,
            owner,
        )


async def give_back(driver: DriverPool, owner: str, job_ids: list[uuid.UUID]) -> None:
    """Leases of steps abandoned at shutdown, given back now rather than at their expiry. A step
    cut mid-submit left 'sending', which the next worker treats as ambiguous."""
    if not job_ids:
        return
    async with driver.acquire() as conn:
        await conn.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, "
            "next_action_at = statement_timestamp() "
            "WHERE id = ANY($1::uuid[]) AND lease_owner = $2",
            job_ids,
            owner,
        )
