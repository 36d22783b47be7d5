"""The sender: claims due deliveries, attempts each in a task of its own, writes the outcomes.

A worker runs one, beside (never inside) its job steps: a slow or dead receiver holds only its
own deliveries' tasks, each bounded by ``FOLEY_TENANT_WEBHOOK_TIMEOUT``, and at most
``FOLEY_TENANT_WEBHOOK_RECEIVER_CONCURRENCY`` of them across workers, so other receivers' and
the jobs' work goes on. Outcomes are written in batches (one statement for however many attempts
ended meanwhile): that, not the HTTP, is what bounds a worker's deliveries per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from app.config import Settings
from app.db.driver import DriverPool
from app.kit.clock import utcnow
from app.metrics import DELIVERY_ATTEMPTS, DELIVERY_DURATION
from app.notifications import queue
from app.notifications.signing import signed_headers
from app.notifications.transport import Outcome, Transport

log = structlog.get_logger(__name__)

# A receiver's Retry-After is honoured up to this (a typo of a year must not park a delivery).
MAX_RETRY_AFTER = timedelta(hours=24)
# Waiting for due work that another worker's in-flight deliveries hold back: look this often.
BLOCKED_RECHECK_S = 0.1

# What an attempt made of its delivery, as the metric says it.
_ATTEMPT_OUTCOMES = {"succeeded": "succeeded", "pending": "retrying", "failed": "failed"}

# Called with (endpoint id, reason) for each endpoint to disable.
Disable = Callable[[uuid.UUID, str], Awaitable[None]]


def decide(
    claimed: queue.Claimed,
    outcome: Outcome,
    *,
    attempted_at: datetime,
    schedule: list[timedelta],
    now: datetime,
) -> queue.Recorded:
    """What an attempt's outcome makes of its delivery: succeeded; failed (410, or the schedule
    is spent); or pending, retried after the schedule's next delay (later if the receiver's
    Retry-After says so)."""

    def recorded(status: str, next_at: datetime | None, pos: int) -> queue.Recorded:
        return queue.Recorded(
            claimed.id,
            status,
            next_at,
            pos,
            outcome.status_code,
            outcome.error,
            attempted_at,
            outcome.duration_ms,
        )

    if outcome.ok:
        return recorded("succeeded", None, claimed.schedule_pos)
    if outcome.status_code == 410 or claimed.schedule_pos >= len(schedule):
        return recorded("failed", None, claimed.schedule_pos)
    delay = schedule[claimed.schedule_pos]
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    return recorded("pending", now + delay, claimed.schedule_pos + 1)


class Sender:
    def __init__(
        self,
        driver: DriverPool,
        settings: Settings,
        transport: Transport,
        *,
        owner: str,
        disable: Disable,
    ) -> None:
        self.driver = driver
        self.settings = settings
        self.transport = transport
        self.owner = owner
        self.disable = disable
        self._wake = asyncio.Event()
        self._flush = asyncio.Event()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._done: list[tuple[queue.Claimed, queue.Recorded]] = []
        self.attempts = 0  # counted for the log at stop and for tests

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled; then in-flight attempts are cut and their leases given back."""
        writer = asyncio.create_task(self._write_loop(), name="webhook-outcomes")
        try:
            while True:
                self._wake.clear()
                free = self.settings.tenant_webhook_concurrency - len(self._running)
                if free > 0:
                    try:
                        claimed = await queue.claim(
                            self.driver,
                            self.owner,
                            self.settings.tenant_webhook_lease,
                            free,
                            self.settings.tenant_webhook_receiver_concurrency,
                        )
                    except Exception:
                        log.exception("webhook claim failed; retrying")
                        await asyncio.sleep(1.0)
                        continue
                    for c in claimed:
                        self._running[c.id] = asyncio.create_task(self._attempt(c))
                    if len(claimed) == free:
                        continue  # every slot filled: more may be due
                # With attempts in flight, their ends wake the next claim (which also takes any
                # retry come due meanwhile); with none, look up when the next one is due.
                await self._idle(free > 0 and not self._running)
        finally:
            writer.cancel()
            cut = list(self._running)
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), writer, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._flush_outcomes()
                await queue.give_back(self.driver, self.owner, cut)

    async def _idle(self, look_up_due: bool) -> None:
        """Until woken (new deliveries, an attempt ended), the next delivery's due time, or the
        poll interval (what another process made due, a dead sender's expired leases)."""
        timeout = self.settings.worker_poll_interval.total_seconds()
        if look_up_due:
            try:
                due = await queue.soonest_due(self.driver)
            except Exception:
                log.exception("webhook due time unknown")
                due = None
            if due is not None:
                wait = (due - utcnow()).total_seconds()
                # Due already but not claimed: its receiver is at its cap with another worker.
                timeout = min(timeout, max(wait, BLOCKED_RECHECK_S))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, claimed: queue.Claimed) -> None:
        try:
            attempted_at = utcnow()
            headers = signed_headers(claimed.message_id, claimed.body, claimed.secrets)
            outcome = await self.transport.post(claimed.url, headers, claimed.body)
            done = decide(
                claimed,
                outcome,
                attempted_at=attempted_at,
                schedule=self.settings.tenant_webhook_retry_schedule,
                now=utcnow(),
            )
            self._done.append((claimed, done))
            self.attempts += 1
            DELIVERY_ATTEMPTS.labels(_ATTEMPT_OUTCOMES[done.status]).inc()
            DELIVERY_DURATION.observe(outcome.duration_ms / 1000)
            self._flush.set()
        finally:
            # The claim loop is woken once the outcome is written (its lease given back): before
            # that, the receiver's room it would look for is not free yet.
            self._running.pop(claimed.id, None)

    async def _write_loop(self) -> None:
        while True:
            await self._flush.wait()
            self._flush.clear()
            try:
                await self._flush_outcomes()
            except Exception:
                # Left leased: retried by whoever claims them after the lease (at least once).
                log.exception("writing webhook outcomes failed")
                await asyncio.sleep(0.5)

    async def _flush_outcomes(self) -> None:
        done, self._done = self._done, []
        if not done:
            return
        ok = {c.endpoint_id for c, r in done if r.status == "succeeded" and c.endpoint_id}
        bad = {c.endpoint_id for c, r in done if r.status != "succeeded" and c.endpoint_id}
        now = utcnow()
        failing = await queue.record(
            self.driver, self.owner, [r for _, r in done], succeeded=ok, failed=bad, now=now
        )
        # Their leases are given back: the receivers' room (counted from the leases) is free.
        self._wake.set()
        gone = {c.endpoint_id for c, r in done if r.status_code == 410 and c.endpoint_id}
        for endpoint_id in gone:
            await self.disable(endpoint_id, "the receiver answered 410 Gone")
        limit = self.settings.tenant_webhook_disable_after
        for endpoint_id, since in failing:
            if endpoint_id not in gone and since is not None and now - since >= limit:
                await self.disable(
                    endpoint_id, f"every attempt failed since {since.isoformat()} ({limit})"
                )
