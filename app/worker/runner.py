"""The worker process: claim due jobs, run one step each, repeat.

It wakes on ``NOTIFY foley_jobs`` (a new job, a webhook, a cancel), falls back to polling every
``worker_poll_interval``, claims only new jobs when only new jobs woke it, keeps at most
``worker_concurrency`` steps running, extends the leases of the jobs it holds while they run,
and on SIGTERM stops claiming, lets running steps finish for a grace period, and gives back the
leases of any it had to abandon.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import socket
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.driver import DriverPool, create_driver_pool
from app.db.engine import create_sessionmaker, unit_of_work
from app.files import retention
from app.jobs.repository import NEW_JOBS_PAYLOAD, NOTIFY_CHANNEL
from app.jobs.tasks import WorkerContext, released_until, run_step
from app.kit.clock import utcnow
from app.kit.idempotency import prune_expired
from app.models import Job
from app.storage import Storage
from app.upstream.fal import FalClient
from app.usage import ledger, limits
from app.webhooks.tokens import JobTokens, resolve_webhook_secret
from app.worker import claims

log = structlog.get_logger(__name__)

LISTEN_PING_S = 15.0
# Looking again a moment after a job's due time, so the claim's clock is surely past it.
DUE_SLACK = timedelta(milliseconds=2)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        fal: FalClient,
        storage: Storage,
        *,
        owner: str | None = None,
        driver: DriverPool | None = None,
    ) -> None:
        """``driver``: the pool claims and other single statements run on; by default ``open``
        makes one on ``engine``'s database (and ``close`` closes it)."""
        self.settings = settings
        self.engine = engine
        self.owner = owner or worker_id()
        self._driver = driver
        self._own_pool: asyncpg.Pool | None = None
        tmp = Path(settings.data_dir) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.ctx = WorkerContext(
            settings=settings,
            sessionmaker=create_sessionmaker(engine),
            fal=fal,
            storage=storage,
            tokens=JobTokens(resolve_webhook_secret(settings)),
            owner=self.owner,
            tmp_dir=tmp,
            driver=driver,
        )
        # _claim_now: claim at once (a NOTIFY, a step that left work due); _follow_ups_now: and
        # claim follow-ups too, not only new jobs. _stirred: look again at when to claim (that,
        # or a new due time).
        self._claim_now = False
        self._follow_ups_now = False
        self._polled_at = utcnow()  # the last claim of follow-ups
        self._stirred = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._due_times: list[datetime] = []  # a heap: when jobs this worker released are due
        self.steps_run = 0

    @property
    def driver(self) -> DriverPool:
        assert self._driver is not None, "open() the worker first"
        return self._driver

    async def open(self) -> None:
        if self._driver is None:
            # A connection per running step (its 'sending' mark), plus the claims and the
            # heartbeat.
            self._own_pool = await create_driver_pool(
                self.engine, max_size=self.settings.worker_concurrency + 2
            )
            self._driver = self.ctx.driver = self._own_pool

    async def close(self) -> None:
        if self._own_pool is not None:
            await self._own_pool.close()
            self._own_pool = None
            self._driver = self.ctx.driver = None

    async def __aenter__(self) -> Worker:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def stop(self) -> None:
        self._stopping.set()
        self.wake()

    def wake(self, *, new_jobs_only: bool = False) -> None:
        """Claim at once; ``new_jobs_only``: nothing but queued jobs can have become due."""
        self._claim_now = True
        if not new_jobs_only:
            self._follow_ups_now = True
        self._stirred.set()

    async def run(self, *, shutdown_grace_s: float = 30.0) -> None:
        await self.open()
        log.info(
            "worker started",
            owner=self.owner,
            concurrency=self.settings.worker_concurrency,
            fal_concurrency=self.settings.fal_concurrency,
        )
        helpers = [
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        try:
            follow_ups = True
            while not self._stopping.is_set():
                # Cleared before claiming: a NOTIFY that lands during the claim must end the
                # next wait, not be wiped out after it.
                self._claim_now = self._follow_ups_now = False
                if follow_ups:
                    self._polled_at = utcnow()
                    self._forget_passed_due_times()
                if await self._claim_and_start(follow_ups=follow_ups):
                    follow_ups = True  # every free slot was filled: more may be due right now
                    continue
                follow_ups = await self._idle()
        finally:
            await self._drain(shutdown_grace_s)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.close()
            log.info("worker stopped", owner=self.owner, steps=self.steps_run)

    async def _claim_and_start(self, *, follow_ups: bool = True) -> bool:
        """Claim what is due into the free slots and start its steps; True when every free slot
        was filled (a claim that came back short took everything due). Without ``follow_ups``
        only queued jobs are claimed: the new jobs' steps then have the worker to themselves
        instead of sharing it with a claim that would find nothing."""
        free = self.settings.worker_concurrency - len(self._running)
        if free <= 0:
            await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)
            return True
        lease = self.settings.lease_duration
        started = 0
        try:
            # New work first (its latency is what clients see): its steps are running before the
            # follow-ups are claimed. Follow-ups fill the rest.
            async with self.driver.acquire() as conn:
                jobs = await claims.claim_dispatches(
                    conn,
                    self.owner,
                    lease,
                    free,
                    self.settings.fal_concurrency,
                    self.settings.max_in_flight_per_tenant,
                )
            started += self._start(jobs)
            if follow_ups and started < free:
                async with self.driver.acquire() as conn:
                    jobs = await claims.claim_follow_ups(conn, self.owner, lease, free - started)
                started += self._start(jobs)
        except Exception:
            log.exception("claim failed; retrying")
            await asyncio.sleep(1.0)
            return False
        return started == free

    def _start(self, jobs: list[Job]) -> int:
        for job in jobs:
            self._running[job.id] = asyncio.create_task(self._step(job), name=f"job-{job.id}")
        return len(jobs)

    async def _step(self, job: Job) -> None:
        try:
            await run_step(self.ctx, job)
        finally:
            self.steps_run += 1
            self._running.pop(job.id, None)
            due = released_until.get()
            if due is None or due <= utcnow():
                # Finished (its place at fal may let a queued job go), due again now, or its
                # state unknown: claim now.
                self.wake()
            else:
                heapq.heappush(self._due_times, due)
                self._stirred.set()

    def _forget_passed_due_times(self) -> None:
        """The claim about to run takes every job due by now."""
        now = utcnow()
        while self._due_times and self._due_times[0] <= now:
            heapq.heappop(self._due_times)

    async def _idle(self) -> bool:
        """Until a wake-up (a NOTIFY, a step that left work due), the soonest due time of a job
        this worker put off, or the poll interval (which finds what other workers put off, and
        any lost NOTIFY), whichever comes first. True when follow-ups may be due: anything but
        a wake-up for new jobs alone, or one that came when a poll or a due time was reached
        anyway (a steady stream of new jobs must not put off the polling)."""
        poll_at = self._polled_at + self.settings.worker_poll_interval
        while not self._claim_now:
            until = poll_at
            if self._due_times:
                until = min(until, self._due_times[0] + DUE_SLACK)
            wait_s = (until - utcnow()).total_seconds()
            if wait_s <= 0:
                return True
            self._stirred.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stirred.wait(), wait_s)
        now = utcnow()
        return (
            self._follow_ups_now
            or now >= poll_at
            or bool(self._due_times and self._due_times[0] <= now)
        )

    async def _drain(self, grace_s: float) -> None:
        if not self._running:
            return
        log.info("waiting for running steps", count=len(self._running), grace_s=grace_s)
        _, pending = await asyncio.wait(list(self._running.values()), timeout=grace_s)
        abandoned = [job_id for job_id, t in self._running.items() if t in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if abandoned:
            # Give the jobs back now rather than at lease expiry. A step cut mid-submit left
            # submit_state = 'sending', which the next worker treats as ambiguous: nothing is
            # sent twice.
            async with unit_of_work(self.ctx.sessionmaker) as session:
                await session.execute(
                    text(
                        "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, "
                        "next_action_at = now() WHERE id = ANY(:ids) AND lease_owner = :owner"
                    ),
                    {"ids": abandoned, "owner": self.owner},
                )

    async def _heartbeat(self) -> None:
        period = self.settings.lease_duration.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            if not self._running:
                continue
            try:
                async with self.driver.acquire() as conn:
                    await claims.extend_leases(
                        conn, self.owner, self.settings.lease_duration, list(self._running)
                    )
            except Exception:
                log.exception("lease heartbeat failed")

    async def _listen(self) -> None:
        """LISTEN on a dedicated connection; reconnect on loss. A signal, not a carrier."""
        while True:
            try:
                async with self.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    assert driver is not None

                    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                        self.wake(new_jobs_only=payload == NEW_JOBS_PAYLOAD)

                    await driver.add_listener(NOTIFY_CHANNEL, on_notify)
                    try:
                        # A ping now and then: a connection that died silently (a dropped
                        # network path) raises here and is replaced, instead of going deaf.
                        while True:
                            await asyncio.sleep(LISTEN_PING_S)
                            await driver.execute("SELECT 1")
                    finally:
                        with contextlib.suppress(Exception):
                            await driver.remove_listener(NOTIFY_CHANNEL, on_notify)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
            await asyncio.sleep(1.0)

    async def housekeep(self) -> None:
        """One round: expired idempotency keys and rate windows, usage blocked for want of a
        price, ledger rows past retention, files past retention. Safe to run on every worker at
        once (each piece is idempotent or takes its rows with SKIP LOCKED)."""
        async with unit_of_work(self.ctx.sessionmaker) as session:
            pruned = await prune_expired(session)
            await limits.prune(session)
            settled = await ledger.settle_unpriced(
                session, bill_422=self.settings.bill_upstream_422
            )
            old = await ledger.prune(session, self.settings.usage_retention)
            removed = 0
            if self.settings.retention_days is not None:
                removed = await retention.remove_expired(
                    session, self.ctx.storage, self.settings.retention_days
                )
        if pruned or settled or old or removed:
            log.info(
                "housekeeping",
                idempotency_keys=pruned,
                settled_unpriced=settled,
                ledger_rows_pruned=old,
                files_removed=removed,
            )

    async def _housekeeping(self) -> None:
        while True:
            try:
                await self.housekeep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(self.settings.housekeeping_interval.total_seconds())
