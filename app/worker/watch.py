"""Live status: follow fal's status stream of the jobs a worker sent, so a job's ``status``
(``starting`` with its queue position, ``processing`` with ``started_at``), its logs and its
completion are current within about a second, with or without webhooks.

One long-lived request per job at fal (``/status/stream?logs=1``), opened by the worker that
submitted it, or by the first worker to poll a job nobody follows (after a restart). What it
sees is written through the store as lifecycle events, without the job's lease: a status only
moves a live job forward. Writes are coalesced to at most one per ``min_write_interval`` per job,
except a change of status and the completion, which are written at once. Completion seen on the
stream is completion: the job is due at once and a worker fetches the result (nothing waits for
the webhook). A stream that breaks hands the job back to polling, which opens it again.

Polls stay as the safety net: a watched job is looked at every ``poll_interval_max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from app.jobs import lifecycle
from app.jobs.steps.context import Watcher
from app.jobs.store import JobStore
from app.kit.clock import utcnow
from app.models import Job
from app.upstream.errors import UpstreamError
from app.upstream.fal import FalClient
from app.upstream.schemas import QueueState, QueueStatus

log = structlog.get_logger(__name__)

_END = object()


class StatusWatcher(Watcher):
    def __init__(
        self,
        fal: FalClient,
        store: JobStore,
        *,
        limit: int,
        retry_after: timedelta,
        on_due: Callable[[datetime], None],
        min_write_interval_s: float = 0.5,
        failure_pause_s: float = 30.0,
    ) -> None:
        """``on_due``: tells the worker a job it watches is due at that time (its completion:
        now; a lost stream: a poll soon). ``failure_pause_s``: a job whose stream failed is
        polled, not streamed, for that long (a stream that cannot work must not turn every poll
        into a reconnect)."""
        self._fal = fal
        self._store = store
        self._limit = limit
        self._retry_after = retry_after
        self._on_due = on_due
        self._interval = min_write_interval_s
        self._failure_pause_s = failure_pause_s
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._failed_at: dict[uuid.UUID, float] = {}
        self.writes = 0

    def has_room(self, job_id: uuid.UUID) -> bool:
        if job_id in self._tasks:
            return True
        if len(self._tasks) >= self._limit:
            return False
        failed_at = self._failed_at.get(job_id)
        if failed_at is not None:
            if time.monotonic() - failed_at < self._failure_pause_s:
                return False
            del self._failed_at[job_id]
        return True

    def watch(self, job: Job) -> bool:
        if job.id in self._tasks:
            return True
        if job.status_url is None or job.upstream_completed or not self.has_room(job.id):
            return False
        seen = _Seen(job.status, job.queue_position)
        task = asyncio.get_running_loop().create_task(
            self._follow(job.id, job.status_url, seen), name=f"watch-{job.id}"
        )
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))
        return True

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, job_id: uuid.UUID, status_url: str, seen: _Seen) -> None:
        statuses: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(self._read(status_url, statuses))
        pending: lifecycle.Progress | None = None
        last_write = -float("inf")
        try:
            while True:
                timeout = None
                if pending is not None:
                    timeout = max(0.0, last_write + self._interval - time.monotonic())
                try:
                    item = await asyncio.wait_for(statuses.get(), timeout)
                except TimeoutError:
                    assert pending is not None
                    if not await self._write(job_id, pending):
                        return
                    pending, last_write = None, time.monotonic()
                    continue
                if item is _END or isinstance(item, BaseException):
                    await self._lost(job_id, item)
                    return
                status: QueueStatus = item
                logs = [e.model_dump(mode="json") for e in status.logs]
                if status.status is QueueState.COMPLETED:
                    done = lifecycle.UpstreamCompleted(status.inference_time, logs)
                    if await self._write(job_id, done):
                        self._on_due(utcnow())
                    return
                progress = lifecycle.Progress(
                    in_progress=status.status is QueueState.IN_PROGRESS,
                    queue_position=status.queue_position,
                    logs=logs,
                    polled=False,
                )
                if not seen.news(progress):
                    continue
                if not statuses.empty():
                    # Newer news is already here (a run that ends as it starts): write once.
                    pending = progress
                elif (
                    seen.status_changed(progress) or time.monotonic() - last_write >= self._interval
                ):
                    if not await self._write(job_id, progress):
                        return
                    pending, last_write = None, time.monotonic()
                else:
                    pending = progress  # the newest snapshot has everything the older had
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, status_url: str, out: asyncio.Queue[Any]) -> None:
        try:
            async with self._fal.status_stream(status_url, logs=True) as statuses:
                async for status in statuses:
                    out.put_nowait(status)
            out.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            out.put_nowait(exc)

    async def _write(self, job_id: uuid.UUID, event: lifecycle.Event) -> bool:
        """Apply a status; False when the job needs no more watching."""
        applied = await self._store.observe(job_id, event)
        self.writes += 1
        return applied is not None and not applied.job.status.terminal

    async def _lost(self, job_id: uuid.UUID, why: Any) -> None:
        # Polling takes over soon (and opens the stream again).
        if isinstance(why, UpstreamError):
            log.info("status stream lost; polling", job_id=str(job_id), error=str(why))
        elif isinstance(why, BaseException):
            log.warning("status stream failed; polling", job_id=str(job_id), exc_info=why)
        self._failed_at[job_id] = time.monotonic()
        if len(self._failed_at) > 10 * max(1, self._limit):  # forget the oldest
            self._failed_at.pop(next(iter(self._failed_at)))
        due = utcnow() + self._retry_after
        applied = await self._store.observe(job_id, lifecycle.Reschedule(due))
        if applied is not None and not applied.job.status.terminal:
            self._on_due(due)


class _Seen:
    """What the watcher last wrote of a job: a snapshot that adds nothing is not written."""

    def __init__(self, status: Any, queue_position: int | None) -> None:
        self.in_progress = status.value == "processing"
        self.queue_position = queue_position
        self.last_log: dict[str, Any] | None = None

    def status_changed(self, p: lifecycle.Progress) -> bool:
        return p.in_progress != self.in_progress

    def news(self, p: lifecycle.Progress) -> bool:
        last_log = p.logs[-1] if p.logs else None
        fresh = (
            p.in_progress != self.in_progress
            or (not p.in_progress and p.queue_position != self.queue_position)
            or last_log != self.last_log
        )
        self.in_progress = p.in_progress
        self.queue_position = p.queue_position
        self.last_log = last_log
        return fresh
