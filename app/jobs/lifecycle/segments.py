"""A video longer than its model takes: the job runs as segments, each a job of its own.

    queued ──split──▶ processing (submit state 'split') ──▶ succeeded | failed | canceled
                         │ each segment: a child job, the normal lifecycle (dispatch, fal,
                         │ finalize), billed on its own; the parent is woken by each one's end
                         ▼
                 every segment succeeded → its sound stitched onto the untouched video

The parent never goes to fal. Its reservation is the whole estimate, held by its segments
(each its share, released when it settles), so the parent itself settles nothing. Rules:
* a segment that failed at fal for a reason that is not the input's and that fal does not bill
  (a runner error, a start timeout, the account refused) runs again, once: never billed twice;
* any other failure ends the job ``failed`` with what was billed, once every segment still
  running was canceled and ended;
* a cancel (or the job's time-out) cancels every live segment; the job ends when they have.

``next_move`` is the whole decision, pure, over the segments as they stand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from app.jobs.lifecycle import events as ev
from app.jobs.lifecycle.endings import error_of, finish
from app.jobs.lifecycle.fallback import UPSTREAM_CODES
from app.jobs.lifecycle.transitions import NOTHING, JobLike, Transition, Wake
from app.models.job import JobStatus, SubmitState

# How long a split job waits before it looks at its segments unwoken: each segment's end wakes
# it at once; this is the safety net (a wake-up lost with a crashed worker).
SEGMENT_LOOK = timedelta(seconds=30)


class _SegmentRun(Protocol):
    segment: Any  # {index, start_s, end_s, try}


R = TypeVar("R", bound=_SegmentRun)

# A segment's runs at most: the first and one retry.
MAX_TRIES = 2


@dataclass(frozen=True)
class SegmentState:
    """A segment's latest run, as the parent sees it."""

    index: int
    tries: int  # runs so far, this one included
    job_id: Any
    status: JobStatus
    error_code: str | None = None
    cancel_requested: bool = False


@dataclass(frozen=True)
class Wait:
    """Segments are still running: look again when one ends."""


@dataclass(frozen=True)
class CancelLive:
    """Cancel these live segments (the job is canceled, timed out, or failed for good)."""

    job_ids: tuple[Any, ...]


@dataclass(frozen=True)
class Retry:
    """Run these segments again (their latest run failed in a way fal does not bill)."""

    segments: tuple[SegmentState, ...]


@dataclass(frozen=True)
class Assemble:
    """Every segment succeeded: stitch their sound."""


@dataclass(frozen=True)
class End:
    status: JobStatus
    error: dict[str, Any]


Move = Wait | CancelLive | Retry | Assemble | End


def next_move(segments: Sequence[SegmentState], *, canceled: bool, timed_out: str | None) -> Move:
    """What the parent does next, given each segment's latest run. ``timed_out``: the job's
    time-out (its message) when it passed."""
    if not segments:  # never so unless their rows were removed by hand
        return End(JobStatus.failed, error_of("segment_failed", "The job's segments are gone."))
    live = [s for s in segments if not s.status.terminal]
    failed = [s for s in segments if s.status is JobStatus.failed]
    final = [s for s in failed if not _retriable(s)]
    stopping = canceled or timed_out is not None or bool(final)
    uncanceled = tuple(s.job_id for s in live if not s.cancel_requested)
    if stopping and uncanceled:
        return CancelLive(uncanceled)
    if live:
        return Wait()
    if canceled:
        return End(JobStatus.canceled, error_of("canceled", "Canceled; its segments with it."))
    if timed_out is not None:
        return End(JobStatus.failed, error_of("timeout", timed_out))
    if final:
        return End(JobStatus.failed, _failed(final, len(segments)))
    if failed:
        return Retry(tuple(failed))
    if any(s.status is not JobStatus.succeeded for s in segments):
        # A segment canceled or aborted by itself (its own Cancel-After): the job cannot be whole.
        gone = [s for s in segments if s.status is not JobStatus.succeeded]
        return End(JobStatus.canceled, _failed(gone, len(segments), code="canceled"))
    return Assemble()


def _retriable(segment: SegmentState) -> bool:
    return segment.tries < MAX_TRIES and segment.error_code in UPSTREAM_CODES


def _failed(
    segments: Sequence[SegmentState], total: int, *, code: str = "segment_failed"
) -> dict[str, Any]:
    indexes = ", ".join(str(s.index) for s in segments)
    noun = "Segment" if len(segments) == 1 else "Segments"
    return error_of(
        code,
        f"{noun} {indexes} of {total} did not succeed; what fal ran was billed on each.",
        details={
            "segments": [
                {
                    "index": s.index,
                    "job_id": str(s.job_id),
                    "status": s.status.value,
                    "error_code": s.error_code,
                }
                for s in segments
            ]
        },
    )


def runs_by_segment(runs: Sequence[R]) -> list[list[R]]:
    """A split job's segment runs (jobs, each with its ``segment``: index, try) grouped by
    segment in index order, each segment's runs in the order given (the store's: by try)."""
    grouped: dict[int, list[R]] = {}
    for run in runs:
        grouped.setdefault(int(run.segment["index"]), []).append(run)
    return [grouped[index] for index in sorted(grouped)]


# --- the parent's transitions ----------------------------------------------------------------


def split(job: JobLike, event: ev.Split, now: datetime) -> Transition:
    if job.status is not JobStatus.queued or job.submit_state is not SubmitState.pending:
        return NOTHING  # a stale step: the job moved on meanwhile
    changes: dict[str, Any] = {
        "status": JobStatus.processing,
        "submit_state": SubmitState.split,
        "input_probe": event.probe,
        "started_at": now,
        "estimated_cost_micros": event.estimated_cost_micros,
        # the segments hold the reservation now (inserted with this transition)
        "reserved_micros": 0,
    }
    if event.original_file_id is not None:
        changes["input_file_id"] = event.original_file_id
    return Transition(
        changes=changes,
        next_action_at=now + SEGMENT_LOOK,
        events=(
            ("job.split", {"model": job.model, "segments": list(event.segments)}),
            ("job.processing", {"status": JobStatus.processing.value}),
        ),
        wake=Wake.QUEUED,
    )


def segment_retried(job: JobLike, event: ev.SegmentRetried, now: datetime) -> Transition:
    if job.submit_state is not SubmitState.split:
        return NOTHING
    # Looked at again at once: a segment that ended while this was decided woke the job before
    # this transition wrote its next look (the look is what reads them under the job's lock).
    return Transition(
        next_action_at=now,
        events=tuple(("job.segment_retried", dict(retry)) for retry in event.retries),
        wake=Wake.QUEUED,
    )


def assembled(job: JobLike, event: ev.SegmentsAssembled, now: datetime) -> Transition:
    if job.submit_state is not SubmitState.split:
        return NOTHING
    # Nothing to bill here: every request was a segment's, settled when it ended.
    return finish(job, now, JobStatus.succeeded, changes={"result": event.result})


def segments_ended(job: JobLike, event: ev.SegmentsEnded, now: datetime) -> Transition:
    if job.submit_state is not SubmitState.split:
        return NOTHING
    return finish(job, now, JobStatus(event.status), error=event.error)
