"""The queue: fal's request lifecycle (IN_QUEUE -> IN_PROGRESS -> COMPLETED) on one event loop.

- At most `concurrency` requests run at once (fal's account concurrency); the rest wait
  IN_QUEUE in FIFO order (`X-Fal-Queue-Priority: low` after normal) with 0-based positions.
- A request waits at least its sampled `queue_wait` before it may start.
- `X-Fal-Request-Timeout` / `X-Fal-Request-Start-Timeout` is a deadline to START: when it fires
  first, the request is completed with 504 `request_timeout` (+ `X-Fal-Request-Timeout-Type:
  user`) and never runs.
- There is no failed or cancelled status: every end is COMPLETED with the result's own status.
- A completed request is kept for `result_ttl_s` (fal: 1 h, 6 min for results >= 10 KB), then
  forgotten (status/result/cancel answer 404).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import random
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from emulator.billing import UsageRecord
from emulator.catalog import ModelSpec
from emulator.errors import (
    ModelError,
    dumps,
    infra_error,
    loads_or_text,
    model_error,
    schema_error_detail,
)
from emulator.faults import pick, rng_for
from emulator.fetch import fetch_input
from emulator.history import RequestHistory
from emulator.webhooks import webhook_body

if TYPE_CHECKING:
    from emulator.state import Emulator

log = logging.getLogger("emulator.queue")

LARGE_RESULT_BYTES = 10 * 1024
TTL_SMALL_S, TTL_LARGE_S = 3600.0, 360.0
CANCELLED_DETAIL = "Request was cancelled by the client"
_SPENT_RNG = random.Random(0)


class Status(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


@dataclass(slots=True)
class Outcome:
    status_code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None


@dataclass(slots=True, eq=False)
class Job:
    request_id: str
    spec: ModelSpec
    raw_input: Any
    input: BaseModel | None
    seq: int
    rng: random.Random
    webhook_url: str | None
    low_priority: bool
    fal_headers: dict[str, str]
    response_url: str
    tags: dict[str, str] = field(default_factory=dict)  # accepted X-Fal-Tags (never the input)
    submitted_at: float = field(default_factory=time.time)
    ready_at: float = 0.0
    status: Status = Status.IN_QUEUE
    started_at: float | None = None
    completed_at: float | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    outcome: Outcome | None = None
    inference_time: float | None = None
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    deadline: asyncio.TimerHandle | None = None
    expires_at: float | None = None
    event: asyncio.Event | None = None

    @property
    def endpoint_id(self) -> str:
        return self.spec.endpoint_id

    def add_log(self, message: str, level: str = "INFO") -> None:
        self.logs.append(
            {
                "message": message,
                "level": level,
                "source": "USER",
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )

    def changed(self) -> None:
        """Wake every status stream watching this request."""
        event, self.event = self.event, None
        if event is not None:
            event.set()

    def waiter(self) -> asyncio.Event:
        if self.event is None:
            self.event = asyncio.Event()
        return self.event


def _iso(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, UTC).isoformat() if moment is not None else None


class QueueEngine:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.jobs: dict[str, Job] = {}
        self.history = RequestHistory(emu.settings.max_kept_results)
        self._normal: OrderedDict[str, Job] = OrderedDict()
        self._low: OrderedDict[str, Job] = OrderedDict()
        self.running: set[Job] = set()
        self._expiry: list[tuple[float, int, str]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._wakeup: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.clear()

    def clear(self) -> None:
        """Forget every request (used by `/_emulator/reset`); running work is abandoned."""
        for job in list(self.jobs.values()):
            if job.deadline is not None:
                job.deadline.cancel()
            if job.task is not None and not job.task.done():
                job.task.cancel()
            job.changed()
        self.jobs.clear()
        self.history.clear()
        self._normal.clear()
        self._low.clear()
        self.running.clear()
        self._expiry.clear()

    # --- lookups -----------------------------------------------------------------------------
    def get(self, request_id: str) -> Job | None:
        job = self.jobs.get(request_id)
        if job is not None and job.expires_at is not None and job.expires_at <= time.monotonic():
            self._forget(job)
            return None
        return job

    def position(self, job: Job) -> int:
        index = 0
        for other in self._normal.values():
            if other is job:
                return index
            index += 1
        for other in self._low.values():
            if other is job:
                return index
            index += 1
        return 0

    def status_body(self, job: Job, with_logs: bool) -> dict[str, Any]:
        base = job.response_url
        body: dict[str, Any] = {
            "status": job.status.value,
            "request_id": job.request_id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
            "logs": list(job.logs) if with_logs else None,
        }
        if job.status is Status.IN_QUEUE:
            body["queue_position"] = self.position(job)
        elif job.status is Status.COMPLETED:
            body["metrics"] = (
                {"inference_time": job.inference_time} if job.inference_time is not None else {}
            )
            if job.outcome is not None and job.outcome.error_type is not None:
                body["error"] = job.outcome.error
                body["error_type"] = job.outcome.error_type
        return body

    # --- submit ------------------------------------------------------------------------------
    def submit(self, job: Job, start_timeout: float | None) -> int:
        """Queue a request; returns its queue position at submit time."""
        knobs = self.emu.knobs
        now = time.monotonic()
        job.ready_at = now + knobs.queue_wait.sample(job.rng)
        self.jobs[job.request_id] = job
        self.history.add(job)
        (self._low if job.low_priority else self._normal)[job.request_id] = job
        position = len(self._normal) - 1 if not job.low_priority else self.position(job)
        loop = asyncio.get_running_loop()
        if start_timeout is not None:
            job.deadline = loop.call_later(start_timeout, self._start_deadline, job)
        if job.ready_at > now:
            loop.call_at(job.ready_at, self._pump_when_ready, job)
        self.pump()
        return position

    def _pump_when_ready(self, job: Job) -> None:
        """The loop may run a timer up to its clock's resolution early (asyncio's
        ``_clock_resolution``): a request not quite ready then would wait for an unrelated event
        to start it, maybe forever. Look again a moment later instead."""
        if time.monotonic() < job.ready_at:
            asyncio.get_running_loop().call_at(job.ready_at + 0.001, self._pump_when_ready, job)
            return
        self.pump()

    def _remove_pending(self, job: Job) -> None:
        self._normal.pop(job.request_id, None)
        self._low.pop(job.request_id, None)

    def pump(self) -> None:
        """Start queued requests while slots are free (call after anything frees a slot)."""
        if not self._normal and not self._low:
            return
        limit = self.emu.knobs.concurrency
        started = False
        while len(self.running) < limit:
            job = self._next_ready()
            if job is None:
                break
            self._start(job)
            started = True
        if started:
            self._positions_changed()

    def _next_ready(self) -> Job | None:
        now = time.monotonic()
        for pending in (self._normal, self._low):
            for job in pending.values():
                if job.ready_at <= now:
                    return job
        return None

    def _positions_changed(self) -> None:
        for pending in (self._normal, self._low):
            for job in pending.values():
                if job.event is not None:
                    job.changed()

    def _start(self, job: Job) -> None:
        self._remove_pending(job)
        if job.deadline is not None:
            job.deadline.cancel()
            job.deadline = None
        job.status = Status.IN_PROGRESS
        job.started_at = time.time()
        knobs = self.emu.knobs
        failure = pick(knobs.failure_rates_for(job.endpoint_id), job.rng)
        compute_s = knobs.run_time_for(job.endpoint_id).sample(job.rng)
        fast = self.emu.fast_cache
        if fast is not None and failure is None and compute_s <= 0 and job.input is not None:
            # Fast mode with nothing to wait for: complete at once, without a task.
            job.add_log("Fast mode: returning the cached output")
            job.inference_time = 0.0
            self._complete(job, Outcome(200, dumps(fast.output_for(job.endpoint_id, job.input))))
            return
        self.running.add(job)
        job.task = asyncio.get_running_loop().create_task(self._run(job, failure, compute_s))
        job.changed()

    def _start_deadline(self, job: Job) -> None:
        job.deadline = None
        if job.status is not Status.IN_QUEUE or self.jobs.get(job.request_id) is not job:
            return
        self._remove_pending(job)
        body = dumps({"detail": "Request timed out", "error_type": "request_timeout"})
        headers = {"X-Fal-Request-Timeout-Type": "user", "X-Fal-Error-Type": "request_timeout"}
        self._complete(job, Outcome(504, body, headers, "Request timed out", "request_timeout"))
        self._positions_changed()

    # --- cancel --------------------------------------------------------------------------------
    def cancel(self, job: Job) -> bool:
        """True when cancellation was requested; False when the request had already completed."""
        if job.status is Status.COMPLETED:
            return False
        if job.status is Status.IN_QUEUE:
            # Removed from the queue and completed at once as cancelled; it never runs.
            self._remove_pending(job)
            if job.deadline is not None:
                job.deadline.cancel()
                job.deadline = None
            job.cancel_requested = True
            self._complete(job, self._cancelled_outcome())
            self._positions_changed()
            return True
        if not job.cancel_requested:
            job.cancel_requested = True
            job.add_log("Cancellation requested", "WARN")
            if job.task is not None:
                job.task.cancel()
        return True

    @staticmethod
    def _cancelled_outcome() -> Outcome:
        body = dumps({"detail": CANCELLED_DETAIL, "error_type": "client_cancelled"})
        return Outcome(
            499, body, {"X-Fal-Error-Type": "client_cancelled"}, CANCELLED_DETAIL,
            "client_cancelled",
        )  # fmt: skip

    # --- running -------------------------------------------------------------------------------
    async def _run(self, job: Job, failure: str | None, compute_s: float) -> None:
        started = time.monotonic()
        outcome: Outcome
        try:
            if failure is not None:
                await self._compute(job, compute_s * job.rng.random())
                outcome = self._failure(failure)
            else:
                outcome = await self._execute(job)
                if outcome.status_code == 200:
                    await self._compute(job, compute_s)
        except asyncio.CancelledError:
            if not job.cancel_requested or self.jobs.get(job.request_id) is not job:
                raise
            outcome = self._cancelled_outcome()
        except Exception:  # a bug in a runner must not kill the queue: answer as fal would
            log.exception("request %s failed", job.request_id)
            _, body, headers, detail = infra_error("internal_error")
            outcome = Outcome(500, body, headers, detail, "internal_error")
        job.inference_time = round(time.monotonic() - started, 4)
        self.running.discard(job)
        if self.jobs.get(job.request_id) is job:
            self._complete(job, outcome)
        self.pump()

    @staticmethod
    def _failure(error_type: str) -> Outcome:
        try:
            status, body, headers, detail = infra_error(error_type)
        except KeyError:
            error = model_error(error_type)
            return Outcome(422, dumps({"detail": error.detail()}), {})
        return Outcome(status, body, headers, detail, error_type)

    async def _compute(self, job: Job, seconds: float) -> None:
        """Simulated GPU time, with progress logs like a diffusion model's."""
        if seconds <= 0:
            return
        interval = self.emu.knobs.log_interval_s
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(interval, remaining))
            done = 1.0 - max(deadline - time.monotonic(), 0.0) / seconds
            job.add_log(f"Inference progress: {round(done * 100)}%")
            job.changed()

    async def _execute(self, job: Job) -> Outcome:
        emu = self.emu
        inp = job.input
        if inp is None:  # validation deferred to the runner (knob validate_at_submit=False)
            try:
                inp = job.input = job.spec.input_schema.model_validate(job.raw_input)
            except ValidationError as exc:
                return Outcome(422, dumps({"detail": schema_error_detail(exc)}))
        if emu.fast_cache is not None:
            job.add_log("Fast mode: returning the cached output")
            return Outcome(200, dumps(emu.fast_cache.output_for(job.endpoint_id, inp)))

        from emulator.runners import MediaContext  # numpy: imported with the first media job

        work_dir = emu.settings.data_dir / "tmp" / job.request_id
        loop = asyncio.get_running_loop()

        def log_from_thread(message: str) -> None:
            loop.call_soon_threadsafe(self._log, job, message)

        media: concurrent.futures.Future[dict[str, Any]] | None = None
        try:
            self._log(job, "Downloading the input video")
            max_mb = job.spec.max_input_mb or emu.settings.max_download_mb
            video = await fetch_input(
                emu.http, getattr(inp, "video_url", ""), work_dir, max_mb * 1024 * 1024
            )
            audio: dict[str, Path] = {}
            for name in job.spec.audio_inputs:
                if url := getattr(inp, name, None):
                    self._log(job, f"Downloading {name}")
                    audio[name] = await fetch_input(
                        emu.http, url, work_dir, max_mb * 1024 * 1024, field=name
                    )
            ctx = MediaContext(
                request_id=job.request_id,
                input=inp,
                video_path=video,
                work_dir=work_dir,
                store=emu.store,
                log=log_from_thread,
                thinksound_shortfall_s=emu.knobs.thinksound_shortfall_s,
                audio_paths=audio,
            )
            media = emu.executor.submit(job.spec.runner_fn(), ctx)
            output = await asyncio.wrap_future(media)
            self._log(job, "Done")
            return Outcome(200, dumps(output))
        except ModelError as exc:
            self._log(job, f"Input rejected: {exc.msg}", "ERROR")
            return Outcome(422, dumps({"detail": exc.detail()}))
        finally:
            if media is not None and not media.done():
                # Cancelled mid-render: a thread cannot be interrupted, so clean up after it.
                media.add_done_callback(lambda _: shutil.rmtree(work_dir, ignore_errors=True))
            else:
                shutil.rmtree(work_dir, ignore_errors=True)

    def _log(self, job: Job, message: str, level: str = "INFO") -> None:
        if job.status is Status.COMPLETED:  # a late line from an abandoned render thread
            return
        job.add_log(message, level)
        job.changed()

    # --- completion ----------------------------------------------------------------------------
    def _complete(self, job: Job, outcome: Outcome) -> None:
        emu = self.emu
        knobs = emu.knobs
        job.outcome = outcome
        job.status = Status.COMPLETED
        job.completed_at = time.time()
        ttl = knobs.result_ttl_s
        if ttl is None:
            ttl = TTL_LARGE_S if len(outcome.body) >= LARGE_RESULT_BYTES else TTL_SMALL_S
        job.expires_at = time.monotonic() + ttl
        heapq.heappush(self._expiry, (job.expires_at, job.seq, job.request_id))
        while len(self._expiry) > emu.settings.max_kept_results:
            # A memory bound for long benchmark runs: the oldest result is forgotten early.
            _, _, oldest = heapq.heappop(self._expiry)
            if (old := self.jobs.get(oldest)) is not None and old.status is Status.COMPLETED:
                self._forget(old)
        emu.ledger.add(self._usage(job))
        if job.webhook_url:
            rng = rng_for(emu.seed, job.seq, "webhook")
            payload_error = outcome.status_code == 200 and (
                rng.random() < knobs.webhook_payload_error_rate
            )
            body = webhook_body(
                job.request_id, outcome.status_code, outcome.body, payload_error=payload_error
            )
            emu.webhooks.enqueue(job.request_id, job.webhook_url, body, rng)
        job.rng = _SPENT_RNG  # ~5 KB of state no longer needed; results are kept for an hour
        job.changed()

    def _usage(self, job: Job) -> UsageRecord:
        outcome = job.outcome
        assert outcome is not None
        spec = job.spec
        knobs = self.emu.knobs
        seconds = job.inference_time or 0.0
        code = outcome.status_code
        if code >= 500:
            quantity, reason = 0.0, "5xx are never billed"
        elif job.started_at is None:
            quantity, reason = 0.0, "never ran"
        elif code == 422 and spec.price.unit == "compute_seconds" and not knobs.bill_runner_422:
            quantity, reason = 0.0, "runner 422 not billed (bill_runner_422 off)"
        else:
            quantity = spec.billed_quantity(job.input, code, seconds)
            reason = "billed" if quantity > 0 else f"status {code}: no billable output"
        return UsageRecord(
            request_id=job.request_id,
            endpoint_id=job.endpoint_id,
            unit=spec.price.unit,
            unit_quantity=quantity,
            unit_price=spec.price.unit_price,
            cost=round(quantity * spec.price.unit_price, 9),
            billed=quantity > 0,
            reason=reason,
            status_code=code,
            submitted_at=datetime.fromtimestamp(job.submitted_at, UTC),
            timestamp=datetime.fromtimestamp(job.completed_at or time.time(), UTC),
            tags=dict(job.tags) if knobs.tag_reporting else None,
        )

    # --- expiry --------------------------------------------------------------------------------
    def _forget(self, job: Job) -> None:
        if self.jobs.get(job.request_id) is job:
            del self.jobs[job.request_id]
        job.changed()
        # The request history keeps the request (input, output, timings) until the memory
        # bound drops it; what only the queue needed goes now.
        job.logs = []
        job.input = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            while self._expiry and self._expiry[0][0] <= now:
                _, _, request_id = heapq.heappop(self._expiry)
                job = self.jobs.get(request_id)
                if job is not None and job.expires_at is not None and job.expires_at <= now:
                    self._forget(job)

    # --- inspection (control endpoint) ----------------------------------------------------------
    def describe(self, job: Job) -> dict[str, Any]:
        outcome = job.outcome
        record = self.emu.ledger.for_request(job.request_id)
        effective = job.input.model_dump() if job.input is not None else None
        return {
            "request_id": job.request_id,
            "endpoint_id": job.endpoint_id,
            "status": job.status.value,
            "queue_position": self.position(job) if job.status is Status.IN_QUEUE else None,
            "input": job.raw_input,
            "effective_input": effective,
            "webhook_url": job.webhook_url,
            "fal_headers": job.fal_headers,
            "tags": job.tags,
            "submitted_at": _iso(job.submitted_at),
            "started_at": _iso(job.started_at),
            "completed_at": _iso(job.completed_at),
            "inference_time": job.inference_time,
            "cancel_requested": job.cancel_requested,
            "logs": job.logs,
            "result_status": outcome.status_code if outcome else None,
            "result": loads_or_text(outcome.body) if outcome else None,
            "error_type": outcome.error_type if outcome else None,
            "usage": record.as_dict() if record else None,
        }
