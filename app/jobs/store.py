"""The jobs store: the only code that reads or writes ``jobs`` rows (and appends ``job_events``).

Everything a job goes through passes here: its insert, tenant-scoped reads, the workers' claims
and leases, and every transition. A transition is decided by app.jobs.lifecycle (pure) and
written by ``apply`` in one transaction with what must commit with it: the event log entry, the
usage ledger and budget settlement, a wake-up for the workers. Guards (the lease owner, the
status) are checked on the locked row, so a step that lost its lease writes nothing.

A few statements are on every job's way to fal (the insert, the claims, the 'sending' mark).
They run on the raw asyncpg connection of the engine's pool (app.db.driver) inside the function
that owns them: a caller sees one function, the tests cover it as one.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from sqlalchemy import Enum, Select, func, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.driver import DriverPool
from app.db.engine import unit_of_work
from app.jobs import lifecycle
from app.kit.clock import utcnow
from app.models import FalWebhookEvent, Job, JobEvent, JobStatus, SubmitState
from app.usage import budgets, ledger

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "foley_jobs"
# The payload of a wake-up for newly accepted jobs alone (workers then claim only queued jobs);
# every other payload names what happened to jobs that may already be at fal.
NEW_JOBS_PAYLOAD = "job"
DISPATCH_LOCK = 72190002


class LeaseLost(Exception):
    """Another worker holds the job now: our step's outcome must not be written."""


# --- a new job -----------------------------------------------------------------------------------


@dataclass(slots=True)
class NewJob:
    """A job as it is accepted: what accepting builds, stores and presents. A plain object, not an
    ORM instance: the accept path never loads it back, and instrumented attributes cost more
    than the rest of building it. Attribute names are the Job model's, so the presenter reads
    either; the fields after ``created_at`` are what a job that never ran has."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    model: str
    endpoint: str
    input: dict[str, Any]
    upstream_payload: dict[str, Any]
    job_metadata: dict[str, Any]
    input_file_id: uuid.UUID | None
    created_at: datetime
    estimated_cost_micros: int = 0
    reserved_micros: int = 0
    budget_period_start: datetime | None = None
    status: JobStatus = JobStatus.queued
    submit_state: SubmitState = SubmitState.pending
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    upstream_request_id: str | None = None
    queue_position: int | None = None
    input_probe: dict[str, Any] | None = None
    inference_s: float | None = None
    data_removed: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def row(self) -> dict[str, Any]:
        """Column → value; the columns left out take their defaults (the job has not run)."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "model": self.model,
            "endpoint": self.endpoint,
            "status": self.status.value,
            "input": self.input,
            "upstream_payload": self.upstream_payload,
            "metadata": self.job_metadata,
            "input_file_id": self.input_file_id,
            "submit_state": self.submit_state.value,
            "submit_attempts": 0,
            "upstream_completed": False,
            "poll_count": 0,
            "estimated_cost_micros": self.estimated_cost_micros,
            "reserved_micros": self.reserved_micros,
            "budget_period_start": self.budget_period_start,
            # due at once: the first worker to look claims it
            "next_action_at": self.created_at,
            "event_seq": 1,  # its creation, below
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }

    def created_event(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "tenant_id": self.tenant_id,
            "seq": 1,
            "type": "job.created",
            "data": {"status": JobStatus.queued.value, "model": self.model},
            "created_at": self.created_at,
        }


_JSONB_COLUMNS = frozenset({"input", "upstream_payload", "metadata"})


@functools.cache
def _insert_alone_sql(columns: tuple[str, ...]) -> str:
    """The job's INSERT and its creation event as one statement, which inserts nothing when the
    tenant has a budget (read in this very statement: no cache decides whether money is
    reserved). NewJob.row() has always the same columns: built once; values are parameters."""
    n = len(columns)
    values = ", ".join(
        f"${i}::jsonb" if name in _JSONB_COLUMNS else f"${i}"
        for i, name in enumerate(columns, start=1)
    )
    tenant = columns.index("tenant_id") + 1
    return (
        f"WITH job AS (INSERT INTO jobs ({', '.join(columns)}) "  # noqa: S608 (columns are ours)
        f"SELECT {values} WHERE {budgets.no_budget_sql(f'${tenant}')} "
        "RETURNING id, tenant_id, created_at) "
        "INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at) "
        f"SELECT id, tenant_id, 1, 'job.created', ${n + 1}::jsonb, created_at FROM job"
    )


async def insert_unless_budgeted(driver: DriverPool, job: NewJob) -> bool:
    """Insert a new job that is all its acceptance writes — one statement, one round trip,
    committed by itself — unless its tenant has a budget (then nothing is written and the caller
    inserts it with its reservation, ``insert``). True when inserted."""
    row = job.row()
    params = [json.dumps(v) if c in _JSONB_COLUMNS else v for c, v in row.items()]
    params.append(json.dumps(job.created_event()["data"]))
    async with driver.acquire() as conn:
        status = await conn.execute(_insert_alone_sql(tuple(row)), *params)
    return status == "INSERT 0 1"


_INSERT_JOB = insert(Job.__table__)
_INSERT_EVENT = insert(JobEvent.__table__)


async def insert(session: AsyncSession, job: NewJob) -> None:
    """Insert a new job and its creation event in the session's transaction (with the budget
    reservation or the idempotency record it must commit with)."""
    await session.execute(_INSERT_JOB, job.row())
    await session.execute(_INSERT_EVENT, job.created_event())


# --- reads, tenant-scoped ------------------------------------------------------------------------


def _tenant_jobs(tenant_id: uuid.UUID) -> Select[tuple[Job]]:
    return select(Job).where(Job.tenant_id == tenant_id)


async def get_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> Job | None:
    return (await session.scalars(_tenant_jobs(tenant_id).where(Job.id == job_id))).first()


async def lock_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> Job | None:
    """The tenant's job, row-locked for a transition in the caller's transaction."""
    stmt = _tenant_jobs(tenant_id).where(Job.id == job_id).with_for_update()
    return (await session.scalars(stmt.execution_options(populate_existing=True))).first()


async def list_for_tenant(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    status: JobStatus | None = None,
    model: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[Sequence[Job], bool]:
    """Newest first, keyset-paginated on (created_at, id). Returns (page, has_more)."""
    stmt = _tenant_jobs(tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if model is not None:
        stmt = stmt.where(Job.model == model)
    if created_after is not None:
        stmt = stmt.where(Job.created_at > created_after)
    if created_before is not None:
        stmt = stmt.where(Job.created_at < created_before)
    key = tuple_(Job.created_at, Job.id)
    if before is not None:
        # ending_before: the page just newer than the cursor, read oldest-first then flipped.
        stmt = stmt.where(key > tuple_(*before)).order_by(Job.created_at.asc(), Job.id.asc())
        rows = list((await session.scalars(stmt.limit(limit + 1))).all())
        has_more = len(rows) > limit
        return list(reversed(rows[:limit])), has_more
    if after is not None:
        stmt = stmt.where(key < tuple_(*after))
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(stmt)).all())
    return rows[:limit], len(rows) > limit


async def cursor_of(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> tuple[datetime, uuid.UUID] | None:
    stmt = select(Job.created_at, Job.id).where(Job.tenant_id == tenant_id, Job.id == job_id)
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def events_for_tenant(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    after_seq: int = 0,
    limit: int = 100,
) -> tuple[Sequence[JobEvent], bool]:
    """A job's events in order, after ``after_seq``. Returns (page, has_more)."""
    stmt = (
        select(JobEvent)
        .where(JobEvent.tenant_id == tenant_id, JobEvent.job_id == job_id)
        .where(JobEvent.seq > after_seq)
        .order_by(JobEvent.seq)
        .limit(limit + 1)
    )
    rows = list((await session.scalars(stmt)).all())
    return rows[:limit], len(rows) > limit


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status.value: n for status, n in rows.all()}


# --- claims and leases (the worker) --------------------------------------------------------------
# A job is due when its ``next_action_at`` has passed, it is live, and nobody holds an unexpired
# lease on it. Claims use ``FOR UPDATE SKIP LOCKED`` so any number of workers can claim at once
# without two taking one job; the lease (not the row lock, which ends with the claim's
# transaction) keeps the job ours while a step works on it, and its expiry is how a dead worker's
# jobs come back. Times are ``statement_timestamp()``: a claim is judged when it runs.


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
_RETURNING = ", ".join(f'jobs."{name}"' for name, _, _ in _FIELDS)


def job_from_row(row: asyncpg.Record) -> Job:
    """A claimed row as a ``Job`` (not attached to any session): the step's read of the job."""
    values = {}
    for name, key, decode in _FIELDS:
        value = row[name]
        values[key] = value if decode is None else decode(value)
    return Job(**values)


_CLAIM_FOLLOW_UP = f"""
    UPDATE jobs SET lease_owner = $1, lease_expires_at = statement_timestamp() + $2::interval
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          AND NOT (status = 'queued' AND submit_state = 'pending')
          AND next_action_at <= statement_timestamp()
          AND (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp())
        ORDER BY next_action_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {_RETURNING}
"""  # noqa: S608 (no value is spliced in: the RETURNING list is the table's own columns)

# Fair share: each tenant's queued jobs are numbered oldest first (rn); a job's turn is its
# tenant's jobs already at fal plus rn, divided by the tenant's weight. Taking the lowest turns
# first interleaves tenants round-robin (weighted), so a tenant with 1,000 queued jobs cannot
# starve one with a single job, and a tenant never exceeds its own in-flight cap. The account's
# free concurrency (room) bounds the whole claim.
# $1 owner, $2 lease, $3 limit, $4 the account's concurrency, $5 the default per-tenant cap.
_CLAIM_DISPATCH = f"""
    WITH in_flight AS (
        SELECT tenant_id, count(*) AS n FROM jobs
        WHERE status IN ('queued', 'starting', 'processing')
          AND (submit_state <> 'pending'
               OR (lease_expires_at IS NOT NULL AND lease_expires_at > statement_timestamp()))
        GROUP BY tenant_id
    ),
    room AS (
        SELECT greatest(0, least($3::integer, $4::integer - coalesce(sum(n), 0))) AS n
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
        WHERE q.rn <= $3::integer
          AND coalesce(f.n, 0) + q.rn
              <= coalesce(t.max_in_flight, $5::integer, 2147483647)
        ORDER BY (coalesce(f.n, 0) + q.rn) / t.weight, q.rn, q.id
        LIMIT (SELECT n FROM room)
    )
    UPDATE jobs SET lease_owner = $1, lease_expires_at = statement_timestamp() + $2::interval
    WHERE id IN (SELECT id FROM jobs WHERE id IN (SELECT id FROM picked) FOR UPDATE SKIP LOCKED)
    RETURNING {_RETURNING}
"""  # noqa: S608 (as above)


async def claim_follow_ups(
    driver: DriverPool, owner: str, lease: timedelta, limit: int
) -> list[Job]:
    """Jobs already at (or possibly at) fal that need a look, a finalize or a cancel. One
    statement, committed by itself."""
    if limit <= 0:
        return []
    async with driver.acquire() as conn:
        rows = await conn.fetch(_CLAIM_FOLLOW_UP, owner, lease, limit)
    return [job_from_row(r) for r in rows]


async def claim_dispatches(
    driver: DriverPool,
    owner: str,
    lease: timedelta,
    limit: int,
    fal_concurrency: int,
    default_tenant_cap: int | None = None,
) -> list[Job]:
    """Queued jobs to send to fal: no more than the account's free concurrency, each tenant
    within its own in-flight cap, tenants interleaved by weighted fair share. The count of
    requests in flight and the claim are one decision even with many workers: they run under a
    transaction-level advisory lock."""
    if limit <= 0:
        return []
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
            _CLAIM_DISPATCH, owner, lease, limit, fal_concurrency, default_tenant_cap
        )
    return [job_from_row(r) for r in rows]


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


# --- transitions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """A transition as committed: the row after it, and when the job is next due (None:
    finished, or still leased by us)."""

    job: Job
    transition: lifecycle.Transition
    next_action_at: datetime | None


# Writes of other tables that must commit with the transition (an output's file rows, a webhook
# event marked processed), given the session and the locked job.
Also = Callable[[AsyncSession, Job], Awaitable[None]]


class JobStore:
    """Transitions of jobs, each in one transaction. Built once per process."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        driver: DriverPool,
        *,
        policy: lifecycle.Policy,
        bill_422: bool,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.driver = driver
        self.policy = policy
        self.bill_422 = bill_422

    async def apply(
        self,
        job_id: uuid.UUID,
        event: lifecycle.Event,
        *,
        owner: str | None,
        also: Also | None = None,
    ) -> Applied:
        """Decide ``event`` on the job as it stands (row-locked) and write the transition.
        ``owner``: the step's lease, checked and given back (LeaseLost if another worker holds
        the job); None for writes made without a lease (the status stream, the tenant's
        cancel), which leave any lease alone."""
        async with unit_of_work(self.sessionmaker) as session:
            job = await self._locked(session, job_id, owner)
            applied = await self.write(session, job, event, owner=owner)
            if also is not None:
                await also(session, job)
        return applied

    async def write(
        self, session: AsyncSession, job: Job, event: lifecycle.Event, *, owner: str | None
    ) -> Applied:
        """``apply`` inside the caller's transaction, on a job it has locked."""
        now = utcnow()
        transition = lifecycle.decide(job, event, now=now, policy=self.policy)
        if transition.reprice_micros is not None:
            try:
                await self._reprice(session, job, transition.reprice_micros)
            except budgets.BudgetExceeded as exc:
                refused = lifecycle.BudgetRefused(exc.code, exc.detail, exc.extra)
                transition = lifecycle.decide(job, refused, now=now, policy=self.policy)
        await self._write(session, job, transition, owner=owner, now=now)
        due = None if owner is None else job.next_action_at
        return Applied(job, transition, due)

    async def _locked(self, session: AsyncSession, job_id: uuid.UUID, owner: str | None) -> Job:
        stmt = select(Job).where(Job.id == job_id).with_for_update()
        job = (await session.scalars(stmt.execution_options(populate_existing=True))).first()
        if job is None or (owner is not None and job.lease_owner != owner):
            raise LeaseLost(str(job_id))
        return job

    async def _reprice(self, session: AsyncSession, job: Job, estimate_micros: int) -> None:
        reserved = await budgets.adjust(
            session,
            tenant_id=job.tenant_id,
            period_start=job.budget_period_start,
            reserved_micros=job.reserved_micros,
            new_estimate_micros=estimate_micros,
        )
        job.estimated_cost_micros = estimate_micros
        job.reserved_micros = reserved

    async def _write(
        self,
        session: AsyncSession,
        job: Job,
        transition: lifecycle.Transition,
        *,
        owner: str | None,
        now: datetime,
    ) -> None:
        for column, value in transition.changes.items():
            setattr(job, column, value)
        if transition.next_action_at is not lifecycle.KEEP:
            job.next_action_at = transition.next_action_at
        if owner is not None and transition.next_action_at is not lifecycle.KEEP:
            job.lease_owner = None
            job.lease_expires_at = None
        elif job.status.terminal:
            job.lease_owner = None
            job.lease_expires_at = None
        if job.status.terminal:
            job.next_action_at = None
        if transition.record_request is not None:
            await ledger.record_request(
                session, job, transition.record_request, unit=ledger.unit_of(job)
            )
        if transition.settle is not None:
            await self._settle(session, job, transition.settle.outcome)
        for kind, data in transition.events:
            job.event_seq += 1
            session.add(
                JobEvent(
                    job_id=job.id,
                    tenant_id=job.tenant_id,
                    seq=job.event_seq,
                    type=kind,
                    data=data,
                    created_at=now,
                )
            )
        await session.flush()
        if transition.wake is not None:
            await notify_workers(session, transition.wake)

    async def _settle(
        self, session: AsyncSession, job: Job, outcome: ledger.Outcome | None
    ) -> None:
        if job.usage_settled:
            return
        if await ledger.settle_job(session, job, outcome, bill_422=self.bill_422):
            job.usage_settled = True
            job.reserved_micros = 0

    # --- 'sending': durable before the request leaves ---------------------------------------

    async def mark_sending(
        self, job: Job, owner: str, starting: lifecycle.SubmitStarting
    ) -> Applied | None:
        """Write 'sending' (with what the preflight measured) and commit it before the submit
        leaves: after a crash, 'sending' means "may exist at fal". None when it took and the
        step may send; otherwise what was applied instead (canceled meanwhile, over budget)."""
        if job.budget_period_start is None and await self._mark_sending_alone(job, owner, starting):
            return None
        applied = await self.apply(job.id, starting, owner=owner)
        if applied.job.submit_state is SubmitState.sending and not applied.job.status.terminal:
            return None
        return applied

    async def _mark_sending_alone(
        self, job: Job, owner: str, starting: lifecycle.SubmitStarting
    ) -> bool:
        """The 'sending' transition of a job with no budget reservation to re-price, as ONE
        statement committed on its own (one round trip, where the general path takes four and
        loads the row). The WHERE clause is the lease and state check, re-evaluated by
        Postgres on the row's newest version, so a cancel committed meanwhile makes it match
        nothing: False, and the general path decides. What it writes is what
        ``lifecycle.decide`` answers for SubmitStarting (tests/jobs/test_store.py holds them
        equal)."""
        now = utcnow()
        transition = lifecycle.decide(job, starting, now=now, policy=self.policy)
        changes = transition.changes
        if changes.get("submit_state") is not SubmitState.sending:
            return False
        ((kind, data),) = transition.events
        probe = changes.get("input_probe")
        payload = changes.get("upstream_payload")
        estimate = transition.reprice_micros
        async with self.driver.acquire() as conn:
            status = await conn.execute(
                _MARK_SENDING_ALONE,
                job.id,
                owner,
                now,
                None if probe is None else json.dumps(probe),
                None if payload is None else json.dumps(payload),
                estimate,
                kind,
                json.dumps(data),
            )
        if status != "INSERT 0 1":
            return False
        if payload is not None:
            job.upstream_payload = payload
        job.submit_state = SubmitState.sending
        return True

    # --- writes without a lease -------------------------------------------------------------

    async def observe(self, job_id: uuid.UUID, event: lifecycle.Event) -> Applied | None:
        """A status seen on fal's stream, by whoever watches it (no lease needed: the
        transition only moves a live job forward). None when the job is gone or finished."""
        try:
            return await self.apply(job_id, event, owner=None)
        except LeaseLost:
            return None

    async def attach_webhook(
        self, session: AsyncSession, request_id: str, claimed_job: uuid.UUID | None
    ) -> tuple[Job | None, str]:
        """Point a verified webhook at its job, in the caller's transaction: the job whose
        request it is, or (by the signed job token) the job whose submit's answer was lost.
        Returns the job and how it was matched: ``matched``, ``attached``, ``orphan`` (fal ran
        a second request for the job) or ``unmatched``."""
        stmt = select(Job).where(Job.upstream_request_id == request_id).with_for_update()
        job = (await session.scalars(stmt)).first()
        if job is not None:
            await self._due_now(session, job)
            return job, "matched"
        if claimed_job is None:
            return None, "unmatched"
        # The row lock waits for a worker still recording this very submit's answer.
        candidate = await self._locked_or_none(session, claimed_job)
        if candidate is None:
            return None, "unmatched"
        if candidate.upstream_request_id == request_id:
            await self._due_now(session, candidate)
            return candidate, "matched"
        if candidate.upstream_request_id is None and candidate.submit_state in (
            SubmitState.sending,
            SubmitState.ambiguous,
        ):
            # The submit's answer was lost (or is still on its way), but fal ran it: this is
            # that request.
            await self.write(session, candidate, lifecycle.Attached(request_id), owner=None)
            return candidate, "attached"
        return candidate, "orphan"

    async def _locked_or_none(self, session: AsyncSession, job_id: uuid.UUID) -> Job | None:
        try:
            return await self._locked(session, job_id, None)
        except LeaseLost:
            return None

    async def _due_now(self, session: AsyncSession, job: Job) -> None:
        if not job.status.terminal:
            job.next_action_at = utcnow()
            await session.flush()
            await notify_workers(session, "webhook")

    async def webhook_event(self, job: Job) -> FalWebhookEvent | None:
        if job.upstream_request_id is None:
            return None
        async with self.sessionmaker() as session:
            stmt = select(FalWebhookEvent).where(
                FalWebhookEvent.request_id == job.upstream_request_id
            )
            return (await session.scalars(stmt)).first()


# Columns as lifecycle.decide(SubmitStarting) sets them; NULL leaves one as it is (the probe and
# the payload are JSON objects, never JSON null). The event takes the next seq, in the same
# statement. Through SQLAlchemy this cost more CPU than its round trip.
_MARK_SENDING_ALONE = """
    WITH job AS (
        UPDATE jobs SET submit_state = 'sending', submit_attempts = submit_attempts + 1,
            submitted_at = $3, updated_at = now(), event_seq = event_seq + 1,
            input_probe = coalesce($4::jsonb, input_probe),
            upstream_payload = coalesce($5::jsonb, upstream_payload),
            estimated_cost_micros = coalesce($6::bigint, estimated_cost_micros)
        WHERE id = $1 AND lease_owner = $2 AND submit_state = 'pending'
          AND budget_period_start IS NULL
          AND status IN ('queued', 'starting', 'processing')
        RETURNING id, tenant_id, event_seq
    )
    INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at)
    SELECT id, tenant_id, event_seq, $7, $8::jsonb, $3 FROM job
"""


# --- housekeeping's writes -----------------------------------------------------------------------


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


async def notify_workers(session: AsyncSession, reason: str) -> None:
    """Wake the workers. Delivered at commit, so a worker never sees an uncommitted job."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": reason}
    )
