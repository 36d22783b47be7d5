"""The worker process: claim due jobs, run one step each, repeat.

It wakes on ``NOTIFY foley_jobs`` (a new job, a webhook, a cancel), falls back to polling every
``worker_poll_interval``, claims only where a wake-up's reason can have made jobs due (queued
jobs to send, jobs at fal to follow up, or both), keeps at most
``worker_concurrency`` steps running, extends the leases of the jobs it holds while they run,
follows the status streams of the jobs it sent (app.worker.watch), beats every second or so (a
completed job leased to a worker that stopped beating is taken over at once), and on SIGTERM
stops claiming, lets running steps finish for a grace period, and gives back the leases of any
it had to abandon. Its periodic chores are in app.worker.housekeeping.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import socket
import uuid
from collections.abc import Callable, KeysView
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.driver import DriverPool, EngineDriver
from app.db.engine import create_sessionmaker
from app.db.listen import listen_forever
from app.jobs import store
from app.jobs.lifecycle import Wake
from app.jobs.steps import StepContext, run_step, step_written
from app.jobs.steps.context import policy_of
from app.jobs.store import NOTIFY_CHANNEL, JobStore, Waker, wake_reason
from app.kit.clock import utcnow
from app.metrics import STEP_SLOTS, STEPS, STEPS_RUNNING
from app.models import Job
from app.notifications.tasks import Notifications
from app.storage import Storage
from app.telemetry.exposition import start_metrics_server
from app.upstream.fal import FalClient
from app.upstream.platform import PlatformClient
from app.webhooks.tokens import JobTokens, resolve_webhook_secret
from app.worker.housekeeping import housekeep, run_housekeeping
from app.worker.watch import StatusWatcher

log = structlog.get_logger(__name__)

# Looking again a moment after a job's due time, so the claim's clock is surely past it.
DUE_SLACK = timedelta(milliseconds=2)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Wakeup:
    """A call to claim at once (a NOTIFY, a step that left work due), and what can have become
    due: ``queued`` jobs to send (accepted, or queued again), ``room`` for queued jobs held
    back (a place at fal freed), ``follow_ups`` (jobs at fal, or to cancel or finish). A claim
    that cannot find anything is left out: the dispatch claim is the worker's costliest (a
    transaction under the account's lock, which every worker's dispatch claim waits on), and a
    place freed can only let a job go when one is waiting."""

    queued: bool = True
    room: bool = True
    follow_ups: bool = True

    def __or__(self, other: Wakeup) -> Wakeup:
        return Wakeup(
            self.queued or other.queued,
            self.room or other.room,
            self.follow_ups or other.follow_ups,
        )


EVERYTHING = Wakeup()
NOTHING = Wakeup(queued=False, room=False, follow_ups=False)
FOLLOW_UP = replace(NOTHING, follow_ups=True)  # a job at fal, or to cancel, is due
# What each reason to wake (lifecycle.Wake) can have made due; any other reason: EVERYTHING.
_DUE_AFTER = {
    Wake.QUEUED: replace(NOTHING, queued=True),
    Wake.FINISHED: replace(NOTHING, room=True),
    Wake.COMPLETED: replace(NOTHING, room=True, follow_ups=True),  # its result, and its place
    Wake.REPORTED: replace(NOTHING, room=True, follow_ups=True),
    Wake.CANCEL: FOLLOW_UP,
    Wake.SEGMENT_ENDED: FOLLOW_UP,  # the job it is part of
}
# A step ended its job: its place at fal is free.
ENDED = replace(NOTHING, room=True)


def due_after(reason: Wake | None) -> Wakeup:
    """Where to claim after a wake-up for ``reason`` (None: a reason not known here)."""
    return EVERYTHING if reason is None else _DUE_AFTER.get(reason, EVERYTHING)


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
        platform: PlatformClient | None = None,
    ) -> None:
        """``driver``: where claims and other single statements run; by default raw
        connections of ``engine``'s own pool (the process has one pool)."""
        self.settings = settings
        self.engine = engine
        self.owner = owner or worker_id()
        self.driver = driver or EngineDriver(engine)
        tmp = Path(settings.data_dir) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        sessionmaker = create_sessionmaker(engine)
        self.store = JobStore(
            sessionmaker,
            self.driver,
            policy=policy_of(settings),
            bill_422=settings.bill_upstream_422,
            waker=Waker(self.owner, lambda reason: self.wake(due_after(reason))),
        )
        self.watcher = StatusWatcher(
            fal,
            self.store,
            limit=settings.status_streams_max if settings.status_streams else 0,
            retry_after=settings.poll_interval_min,
            on_due=self.due_at,
        )
        self.ctx = StepContext(
            settings=settings,
            sessionmaker=sessionmaker,
            store=self.store,
            fal=fal,
            storage=storage,
            tokens=JobTokens(resolve_webhook_secret(settings)),
            owner=self.owner,
            tmp_dir=tmp,
            watcher=self.watcher,
            platform=platform,
        )
        # Telling tenants (outbound webhooks): tasks of their own, never in a job's step.
        self.notifications = Notifications(sessionmaker, self.driver, settings, owner=self.owner)
        self._wakeup: Wakeup | None = None  # the wake-up not taken yet (next_wakeup)
        self._woken = asyncio.Event()
        # While idle: when the wait for a wake-up gives up (the poll, or the soonest due time);
        # moved when a job this worker released is due sooner.
        self._alarm: asyncio.Timeout | None = None
        self._polled_at = utcnow()  # the last claim of follow-ups
        self._stopping = asyncio.Event()
        self._after_outage: asyncio.Task[None] | None = None  # held: a task nobody holds may vanish
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._due_times: list[datetime] = []  # a heap: when jobs this worker released are due
        # This worker's last dispatch claim left due jobs unsent (or it has not made one): a
        # place freed at fal is worth a dispatch claim.
        self._left_waiting = True
        # Counted for the log at stop; also what shows from outside that the worker got going.
        self.steps_run = 0
        self.follow_up_claims = 0

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.watcher.aclose()

    @property
    def running(self) -> KeysView[uuid.UUID]:
        """The jobs whose steps are running now (a live view)."""
        return self._running.keys()

    def due_at(self, when: datetime) -> None:
        """A job is due at ``when`` (told by its status stream): claim then."""
        if when <= utcnow():
            self.wake(FOLLOW_UP)
        else:
            self._claim_later(when)

    def stop(self) -> None:
        self._stopping.set()
        self.wake()

    def wake(self, where: Wakeup = EVERYTHING) -> None:
        """Claim at once, ``where`` jobs can have become due."""
        pending = self._wakeup
        # One wake-up for both: it must ask for all they asked for.
        self._wakeup = where if pending is None else pending | where
        self._woken.set()

    async def next_wakeup(self) -> Wakeup:
        """Wait for a wake-up (none if one came since the last was taken) and take it: the
        worker's loop waits on this between claims."""
        while self._wakeup is None:
            self._woken.clear()
            await self._woken.wait()
        wakeup, self._wakeup = self._wakeup, None
        return wakeup

    async def run(self, *, shutdown_grace_s: float = 30.0) -> None:
        log.info(
            "worker started",
            owner=self.owner,
            concurrency=self.settings.worker_concurrency,
            fal_concurrency=self.settings.fal_concurrency,
        )
        STEP_SLOTS.set(self.settings.worker_concurrency)
        STEPS_RUNNING.set_function(lambda: len(self._running))
        metrics_server = None
        if self.settings.worker_metrics_port is not None:
            metrics_server = await start_metrics_server(
                self.settings.worker_metrics_host, self.settings.worker_metrics_port
            )
        # Beating before the first claim: an owner name seen before (a restart) must not look
        # dead to the other workers for a moment.
        await self._beat()
        helpers = [
            asyncio.create_task(self.listen(), name="listen"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._beats(), name="beats"),
            asyncio.create_task(
                run_housekeeping(self.ctx.sessionmaker, self.settings, self.ctx.storage),
                name="housekeeping",
            ),
            asyncio.create_task(self.notifications.run(), name="notifications"),
        ]
        try:
            where = EVERYTHING
            while not self._stopping.is_set():
                # Dropped before claiming (this claim answers it): a NOTIFY that lands during the
                # claim must end the next wait, not be wiped out after it.
                self._wakeup = None
                if where == EVERYTHING:
                    self._polled_at = utcnow()
                    self._forget_passed_due_times()
                if await self.claim(where):
                    where = EVERYTHING  # every free slot was filled: more may be due right now
                    continue
                where = await self._idle()
        finally:
            await self._drain(shutdown_grace_s)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await store.forget(self.driver, self.owner)
            except Exception:
                log.warning("could not remove the worker's beat", owner=self.owner)
            await self.watcher.aclose()
            if metrics_server is not None:
                metrics_server.close()
            log.info(
                "worker stopped",
                owner=self.owner,
                steps=self.steps_run,
                follow_up_claims=self.follow_up_claims,
            )

    async def claim(self, where: Wakeup = EVERYTHING) -> bool:
        """Claim what is due ``where`` into the free slots and start its steps; True when every
        free slot was filled (a claim that came back short took everything due there)."""
        free = self.settings.worker_concurrency - len(self._running)
        if free <= 0:
            await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)
            return True
        lease = self.settings.lease_duration
        started = 0
        try:
            # New work first (its latency is what clients see): its steps are running before the
            # follow-ups are claimed. Follow-ups fill the rest.
            if where.queued or (where.room and self._left_waiting):
                claim = await store.claim_dispatches(
                    self.driver,
                    self.owner,
                    lease,
                    free,
                    self.settings.fal_concurrency,
                    self.settings.max_in_flight_per_tenant,
                    self.settings.worker_stale_after,
                )
                self._left_waiting = claim.left_waiting
                started += self._start(claim.jobs)
            if where.follow_ups and started < free:
                jobs = await store.claim_follow_ups(
                    self.driver,
                    self.owner,
                    lease,
                    free - started,
                    self.settings.worker_stale_after,
                )
                self.follow_up_claims += 1
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
            STEPS.inc()
            self._running.pop(job.id, None)
            written = step_written.get()
            if written is not None and written.job.status.terminal:
                self.wake(ENDED)
            elif written is None or written.next_action_at is None:
                self.wake()  # its state unknown: claim now
            elif written.next_action_at <= utcnow():
                self.wake()  # due again now
            else:
                self._claim_later(written.next_action_at)

    def _claim_later(self, due: datetime) -> None:
        """A job this worker let go of is due at ``due``: claim then, sooner than planned
        perhaps."""
        heapq.heappush(self._due_times, due)
        self._set_alarm()

    def _forget_passed_due_times(self) -> None:
        """The claim about to run takes every job due by now."""
        now = utcnow()
        while self._due_times and self._due_times[0] <= now:
            heapq.heappop(self._due_times)

    async def _idle(self) -> Wakeup:
        """Until a wake-up (a NOTIFY, a step that left work due), the soonest due time of a job
        this worker put off, or the poll interval (which finds what other workers put off, and
        any lost NOTIFY), whichever comes first. Returns where to claim: where the wake-up
        said, or everywhere when a poll or a due time was reached anyway (a steady stream of
        new jobs must not put off the polling; a job put off may be queued or at fal)."""
        poll_at = self._polled_at + self.settings.worker_poll_interval
        try:
            async with asyncio.timeout(None) as self._alarm:
                self._set_alarm()
                wakeup = await self.next_wakeup()
        except TimeoutError:
            return EVERYTHING
        finally:
            self._alarm = None
        now = utcnow()
        if now >= poll_at or (self._due_times and self._due_times[0] <= now):
            return EVERYTHING
        return wakeup

    def _set_alarm(self) -> None:
        """While idle, end the wait at the poll or the soonest due time, whichever is first (a
        due time added while idle may be the sooner)."""
        # An alarm that went off already cannot be moved, and need not be: the loop claims now.
        if self._alarm is None or self._alarm.expired():
            return
        until = self._polled_at + self.settings.worker_poll_interval
        if self._due_times:
            until = min(until, self._due_times[0] + DUE_SLACK)
        loop = asyncio.get_running_loop()
        self._alarm.reschedule(loop.time() + (until - utcnow()).total_seconds())

    async def _drain(self, grace_s: float) -> None:
        if not self._running:
            return
        log.info("waiting for running steps", count=len(self._running), grace_s=grace_s)
        _, pending = await asyncio.wait(list(self._running.values()), timeout=grace_s)
        abandoned = [job_id for job_id, t in self._running.items() if t in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await store.give_back(self.driver, self.owner, abandoned)

    async def _heartbeat(self) -> None:
        period = self.settings.lease_duration.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            if not self._running:
                continue
            try:
                await store.extend_leases(
                    self.driver, self.owner, self.settings.lease_duration, list(self._running)
                )
            except Exception:
                log.exception("lease heartbeat failed")

    async def _beat(self) -> None:
        try:
            await store.beat(self.driver, self.owner)
        except Exception as exc:
            # Missing beats only let others take over this worker's completed jobs, whose
            # writes the lease guards: nothing to do but beat again.
            log.warning("worker beat failed", error=str(exc))

    async def _beats(self) -> None:
        """Tell the other workers this one is alive (app.jobs.store.liveness)."""
        period = store.beat_period(self.settings.worker_stale_after)
        while True:
            await asyncio.sleep(period)
            await self._beat()

    async def listen(self) -> None:
        """LISTEN for work and wake on every NOTIFY (app.db.listen); once the connection is
        back after a loss, claim at once: NOTIFYs sent meanwhile were not heard. Runs until
        cancelled (``run`` starts it)."""

        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            reason, sender = wake_reason(payload)
            if sender != self.owner:  # this worker's own store woke it already (Waker)
                self.wake(due_after(reason))

        def on_listening(back: bool) -> None:
            if back:
                self.notifications.wake()
                self._after_outage = asyncio.create_task(self._look_again(), name="look-again")

        channels = {
            NOTIFY_CHANNEL: on_notify,
            **{
                channel: _payload_to(callback)
                for channel, callback in self.notifications.listeners().items()
            },
        }
        await listen_forever(self.engine, channels, on_listening=on_listening)

    async def _look_again(self) -> None:
        """The database is back: what fal reported while it was away was not heard."""
        try:
            looked = await store.look_again_at_fal(self.driver)
            log.info("database back: jobs at fal looked at again", jobs=looked)
        except Exception:  # gone again: the next reconnect tries again; polls go on meanwhile
            log.warning("database back, but looking again failed", exc_info=True)
        self.wake()

    async def housekeep(self) -> dict[str, int]:
        """One round of the worker's chores (app.worker.housekeeping)."""
        return await housekeep(self.ctx.sessionmaker, self.settings, self.ctx.storage)


def _payload_to(callback: Callable[[str], None]) -> Callable[[object, int, str, str], None]:
    """An asyncpg listener calling ``callback`` with the NOTIFY's payload."""

    def listener(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return listener
