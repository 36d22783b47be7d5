"""Transitions: the lifecycle's decisions written, each in one transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.driver import DriverPool, NeedsSession, driver_of
from app.db.engine import unit_of_work
from app.jobs import lifecycle
from app.jobs.store import segments
from app.jobs.store.claims import job_from_row
from app.jobs.store.statements import (
    LOCK_JOB,
    MARK_SENDING_ALONE,
    param,
    update_sql,
    update_with_events_sql,
)
from app.jobs.store.wakeups import NOTIFY_CHANNEL, Waker, notify_workers, payload_of
from app.kit.clock import utcnow
from app.kit.money import micros_to_usd
from app.metrics import JOBS_FINISHED
from app.models import Job, JobEvent, JobStatus, SubmitState
from app.upstream.queue import request_urls
from app.usage import budgets, ledger

log = structlog.get_logger(__name__)


class LeaseLost(Exception):
    """Another worker holds the job now: our step's outcome must not be written."""


# --- transitions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """A transition as committed: the row after it, and when the job is next due (None:
    finished, or still leased by us)."""

    job: Job
    transition: lifecycle.Transition
    next_action_at: datetime | None
    # The workers' wake-ups it sent, delivered with its commit.
    wakes: tuple[lifecycle.Wake, ...] = ()


# Writes of other tables that must commit with the transition (an output's file rows, a webhook
# event marked processed), given the transaction's connection and the job as written: plain
# statements, by the module that owns each table.
Also = Callable[[asyncpg.Connection, Job], Awaitable[None]]
# Writes that must commit with a transition found in a session (apply_found), given that session.
AlsoInSession = Callable[[AsyncSession, Job], Awaitable[None]]
# What happened, read from the database in the transaction of its transition (apply_found): the
# event and what must commit with it, or None.
Find = Callable[[AsyncSession, Job], Awaitable[tuple[lifecycle.Event, AlsoInSession | None] | None]]


class JobStore:
    """Transitions of jobs, each in one transaction. Built once per process."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        driver: DriverPool,
        *,
        policy: lifecycle.Policy,
        bill_422: bool,
        waker: Waker | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.driver = driver
        self.policy = policy
        self.bill_422 = bill_422
        self._waker = waker
        self._sender = None if waker is None else waker.name

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
        try:
            applied = await self._apply_alone(job_id, event, owner, also)
        except NeedsSession:
            applied = None  # rolled back whole: written below, through a session
        if applied is not None:
            _count_ending(applied.job, applied.transition)
        else:
            async with unit_of_work(self.sessionmaker) as session:
                job = await self._locked(session, job_id, owner)
                applied = await self._decide(session, job, event, owner, self._sender)
                if also is not None:
                    await also(await driver_of(session), job)
        self._woke(applied)
        return applied

    async def apply_found(
        self, job_id: uuid.UUID, find: Find, *, owner: str | None
    ) -> Applied | None:
        """``apply`` of the event ``find`` answers from the database, in the transaction it read
        in, with the job row-locked: what it read (and locked) cannot change before the
        transition commits, and looking costs no transaction of its own. None (nothing
        written) when ``find`` answers None."""
        async with unit_of_work(self.sessionmaker) as session:
            job = await self._locked(session, job_id, owner)
            found = await find(session, job)
            if found is None:
                return None
            event, also = found
            applied = await self._decide(session, job, event, owner, self._sender)
            if also is not None:
                await also(session, job)
        self._woke(applied)
        return applied

    def _woke(self, applied: Applied) -> None:
        """Committed: the wake-ups it sent reach this store's own worker directly."""
        if self._waker is not None:
            for reason in applied.wakes:
                self._waker.wake(reason)

    async def _apply_alone(
        self, job_id: uuid.UUID, event: lifecycle.Event, owner: str | None, also: Also | None
    ) -> Applied | None:
        """The transition as plain statements on the raw connection, in one transaction: the
        job, its events, its request's ledger row, its settlement (the ledger row priced, the
        daily roll-up, the budget) and what ``also`` writes. Nearly every transition of a
        job's life is written here; through a session each cost ~2 ms of CPU (a success ~4),
        three to ten times their statements (bench/README.md). None when the transition needs
        the session (it re-prices a reservation, settles an attempt it falls back from, or
        ends a segment): nothing was written, and ``apply`` decides again under a new lock.
        A write only the session makes raises NeedsSession inside the transaction (rolled
        back)."""
        async with self.driver.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(LOCK_JOB, job_id)
            if row is None or (owner is not None and row["lease_owner"] != owner):
                raise LeaseLost(str(job_id))
            job = job_from_row(row)
            now = utcnow()
            transition = lifecycle.decide(job, event, now=now, policy=self.policy)
            ends_segment = (
                job.parent_id is not None
                and "status" in transition.changes
                and JobStatus(transition.changes["status"]).terminal
            )
            if (
                transition.settle_request is not None
                or transition.reprice_micros is not None
                or ends_segment
            ):
                return None
            changed = self._apply_to(job, transition, owner=owner)
            if transition.record_request is not None:
                await ledger.record_request(
                    conn, job, transition.record_request, unit=ledger.unit_of(job)
                )
            if (
                transition.settle is not None
                and not job.usage_settled
                and await ledger.settle_job(
                    conn, job, transition.settle.outcome, bill_422=self.bill_422
                )
            ):
                job.usage_settled = True
                job.reserved_micros = 0
                changed.update(usage_settled=None, reserved_micros=None)
            columns = tuple(changed)
            values = [param(c, getattr(job, c)) for c in columns]
            if transition.events:
                # The row's changes and its events in one statement (one round trip less).
                first = job.event_seq - len(transition.events) + 1
                await conn.execute(
                    update_with_events_sql(columns),
                    job_id,
                    *values,
                    job.tenant_id,
                    now,
                    list(range(first, job.event_seq + 1)),
                    [kind for kind, _ in transition.events],
                    [json.dumps(data) for _, data in transition.events],
                    job.created_at,
                )
            elif columns:
                await conn.execute(update_sql(columns), job_id, *values)
            if also is not None:
                await also(conn, job)
            wakes = () if transition.wake is None else (transition.wake,)
            for reason in wakes:
                payload = payload_of(reason, self._sender)
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)
        due = None if owner is None else job.next_action_at
        return Applied(job, transition, due, wakes)

    async def write(
        self, session: AsyncSession, job: Job, event: lifecycle.Event, *, owner: str | None
    ) -> Applied:
        """``apply`` inside the caller's transaction, on a job it has locked. Its wake-ups are
        NOTIFYs only: this store cannot know when the caller commits."""
        return await self._decide(session, job, event, owner, None)

    async def _decide(
        self,
        session: AsyncSession,
        job: Job,
        event: lifecycle.Event,
        owner: str | None,
        sender: str | None,
    ) -> Applied:
        now = utcnow()
        transition = lifecycle.decide(job, event, now=now, policy=self.policy)
        if transition.reprice_micros is not None:
            try:
                await self._reprice(session, job, transition.reprice_micros)
            except budgets.BudgetExceeded as exc:
                refused = lifecycle.BudgetRefused(exc.code, exc.detail, exc.extra)
                transition = lifecycle.decide(job, refused, now=now, policy=self.policy)
        wakes = await self._write(session, job, transition, owner=owner, now=now, sender=sender)
        _count_ending(job, transition)
        due = None if owner is None else job.next_action_at
        return Applied(job, transition, due, wakes)

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

    def _apply_to(
        self, job: Job, transition: lifecycle.Transition, *, owner: str | None
    ) -> dict[str, None]:
        """The transition's values set on ``job``: its changes, when it is next due, its lease
        (given back by the step that held it; a finished job holds none) and its event count.
        Returns the attributes it set, in order."""
        changed: dict[str, None] = {}

        def put(key: str, value: Any) -> None:
            setattr(job, key, value)
            changed[key] = None

        for key, value in transition.changes.items():
            put(key, value)
        if transition.next_action_at is not lifecycle.KEEP:
            put("next_action_at", transition.next_action_at)
        if job.status.terminal:
            put("next_action_at", None)
        releases = owner is not None and transition.next_action_at is not lifecycle.KEEP
        if (releases or job.status.terminal) and job.lease_owner is not None:
            put("lease_owner", None)
            put("lease_expires_at", None)
        if transition.events:
            put("event_seq", job.event_seq + len(transition.events))
        return changed

    async def _write(
        self,
        session: AsyncSession,
        job: Job,
        transition: lifecycle.Transition,
        *,
        owner: str | None,
        now: datetime,
        sender: str | None,
    ) -> tuple[lifecycle.Wake, ...]:
        """The transition written in ``session``; returns the wake-ups it sent."""
        if transition.settle_request is not None:
            # Priced with the model it ran on, before the job moves on to the next.
            await self._settle_attempt(session, job, transition)
        self._apply_to(job, transition, owner=owner)
        if transition.record_request is not None:
            await ledger.record_request(
                session, job, transition.record_request, unit=ledger.unit_of(job)
            )
        if transition.settle is not None:
            await self._settle(session, job, transition.settle.outcome)
        first = job.event_seq - len(transition.events) + 1
        for seq, (kind, data) in enumerate(transition.events, start=first):
            session.add(
                JobEvent(
                    job_id=job.id,
                    tenant_id=job.tenant_id,
                    seq=seq,
                    type=kind,
                    data=data,
                    created_at=now,
                    job_created_at=job.created_at,
                )
            )
        await session.flush()
        wakes: tuple[lifecycle.Wake, ...] = ()
        if job.parent_id is not None and "status" in transition.changes and job.status.terminal:
            await segments.wake_parent(session, job)
            wakes += (lifecycle.Wake.SEGMENT_ENDED,)
        if transition.wake is not None:
            wakes += (transition.wake,)
        for reason in wakes:
            await notify_workers(session, payload_of(reason, sender))
        return wakes

    async def _settle_attempt(
        self, session: AsyncSession, job: Job, transition: lifecycle.Transition
    ) -> None:
        """Settle the request of the attempt the job falls back from, and write its cost on
        that attempt (the last of ``attempts`` in the transition's changes)."""
        assert transition.settle_request is not None
        request = transition.settle_request
        cost = await ledger.settle_request(
            session, job, request.request_id, request.outcome, bill_422=self.bill_422
        )
        attempts = transition.changes.get("attempts")
        if cost is not None and attempts and attempts[-1]["request_id"] == request.request_id:
            attempts[-1]["cost_usd"] = micros_to_usd(cost)

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
            # The caller sends ``job``: it must carry what was written, as the path above does
            # (an upload's payload gains the URL fal fetches only here).
            job.upstream_payload = applied.job.upstream_payload
            job.submit_state = SubmitState.sending
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
                MARK_SENDING_ALONE,
                job.id,
                owner,
                now,
                None if probe is None else json.dumps(probe),
                None if payload is None else json.dumps(payload),
                estimate,
                kind,
                json.dumps(data),
                changes.get("cache_key"),
            )
        if status != "INSERT 0 1":
            return False
        if payload is not None:
            job.upstream_payload = payload
        if changes.get("cache_key") is not None:
            job.cache_key = changes["cache_key"]
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
        self,
        session: AsyncSession,
        request_id: str,
        claimed_job: uuid.UUID | None,
        *,
        queue_url: str,
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
        if any(a.get("request_id") == request_id for a in candidate.attempts or []):
            # The request of a model the job fell back from: settled when it did.
            return candidate, "earlier_attempt"
        if candidate.upstream_request_id is None and candidate.submit_state in (
            SubmitState.sending,
            SubmitState.ambiguous,
        ):
            # The submit's answer was lost (or is still on its way), but fal ran it: this is
            # that request.
            urls = request_urls(queue_url, candidate.endpoint, request_id)
            attached = lifecycle.Attached(
                request_id, urls.status_url, urls.response_url, urls.cancel_url
            )
            await self.write(session, candidate, attached, owner=None)
            return candidate, "attached"
        return candidate, "orphan"

    async def _locked_or_none(self, session: AsyncSession, job_id: uuid.UUID) -> Job | None:
        try:
            return await self._locked(session, job_id, None)
        except LeaseLost:
            return None

    async def _due_now(self, session: AsyncSession, job: Job) -> None:
        await self.write(session, job, lifecycle.CompletionReported(), owner=None)


def _count_ending(job: Job, transition: lifecycle.Transition) -> None:
    status = transition.changes.get("status")
    if status is not None and JobStatus(status).terminal:
        JOBS_FINISHED.labels(job.model, JobStatus(status).value).inc()
