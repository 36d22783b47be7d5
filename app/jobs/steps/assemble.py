"""A split job's step: look at its segments and do what app.jobs.lifecycle.segments says.

Woken by each segment's end (and every ``SEGMENT_LOOK`` without): cancel the live segments when
the job is canceled, timed out or failed for good; run a failed segment again where fal did not
bill it; end the job as its segments did; or, when every segment succeeded, stitch their sound
with equal-power crossfades over the overlaps and lay it on the untouched original (the job's
output options apply as to any job: mix, format, loudness).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import CATALOG
from app.files import service as files
from app.jobs import lifecycle
from app.jobs.lifecycle.endings import error_of
from app.jobs.lifecycle.segments import (
    SEGMENT_LOOK,
    Assemble,
    CancelLive,
    End,
    Move,
    Retry,
    SegmentState,
    Wait,
    next_move,
    runs_by_segment,
)
from app.jobs.output_options import OutputOptions
from app.jobs.steps import soundtrack
from app.jobs.steps.context import StepContext
from app.jobs.steps.finalize import StoredOutput, describe_output, store_output
from app.jobs.steps.split import segment_job
from app.jobs.store import LeaseLost, insert, segments_of
from app.kit.clock import utcnow
from app.media.errors import MediaError
from app.media.probe import probe
from app.media.segments import Segment
from app.media.stitch import SegmentAudio
from app.models import FileKind, Job, JobStatus, StoredFile
from app.upstream.errors import OutputUnavailableError, TransientUpstreamError
from app.usage import budgets
from app.usage.estimates import estimate_job

log = structlog.get_logger(__name__)


async def assemble(ctx: StepContext, job: Job) -> None:
    for _ in range(_LOOKS):
        looked = await _look(ctx, job)
        if looked is None:
            return  # segments still running: the next look is written
        move, latest = looked
        match move:
            case CancelLive(job_ids=job_ids):
                await _cancel(ctx, job_ids)
                continue  # those that ended at once (never sent) may have been the last
            case Retry(segments=failed):
                await _retry(ctx, job, [run for run in latest if run.id in _ids(failed)])
            case End(status=status, error=error):
                await ctx.apply(job.id, lifecycle.SegmentsEnded(status.value, error))
            case Assemble():
                await _assemble(ctx, job, latest)
        return
    await ctx.apply(job.id, lifecycle.Reschedule(utcnow() + SEGMENT_LOOK))


# Looks in one step: a cancel of the live segments, then the look that sees how they ended.
_LOOKS = 3


async def _look(ctx: StepContext, job: Job) -> tuple[Move, list[Job]] | None:
    """What to do next, read from the segments under the job's row lock: a segment's end wakes
    the job by updating this row, so it either committed before this read (and is seen) or
    waits for this transaction and wakes the job after it. While segments run, the next look
    is written in the same transaction (None); else the move, with each segment's latest run,
    and nothing written."""
    found: list[tuple[Move, list[Job]]] = []

    async def find(session: AsyncSession, row: Job) -> tuple[lifecycle.Event, None] | None:
        runs = (await segments_of(session, [row.id]))[row.id]
        latest = latest_runs(runs)
        now = utcnow()
        timed_out = None
        if now - row.created_at > ctx.settings.job_timeout:
            timed_out = f"The job did not finish within {ctx.settings.job_timeout}."
        canceled = row.cancel_requested_at is not None or (
            row.cancel_after_at is not None and now >= row.cancel_after_at
        )
        states = [_state(run, tries) for run, tries in latest]
        move = next_move(states, canceled=canceled, timed_out=timed_out)
        if isinstance(move, Wait):
            return lifecycle.Reschedule(now + SEGMENT_LOOK), None
        found.append((move, [run for run, _ in latest]))
        return None

    applied = await ctx.apply_found(job.id, find)
    return None if applied is not None else found[0]


def latest_runs(runs: Sequence[Job]) -> list[tuple[Job, int]]:
    """Each segment's latest run and how many runs it had."""
    return [(tried[-1], len(tried)) for tried in runs_by_segment(runs)]


def _state(run: Job, tries: int) -> SegmentState:
    code = (run.error or {}).get("code") if run.status is JobStatus.failed else None
    index = int((run.segment or {})["index"])
    requested = run.cancel_requested_at is not None
    return SegmentState(index, tries, run.id, run.status, code, cancel_requested=requested)


def _ids(states: Sequence[SegmentState]) -> set[Any]:
    return {s.job_id for s in states}


async def _cancel(ctx: StepContext, job_ids: Sequence[Any]) -> None:
    """The tenant's cancel, on each live segment: one never sent ends at once; one at fal is
    canceled there by its own next step (and its end wakes the parent)."""
    for job_id in job_ids:
        try:
            await ctx.store.apply(job_id, lifecycle.CancelRequested(), owner=None)
        except (lifecycle.NotApplicable, LeaseLost):
            pass  # it ended meanwhile


async def _retry(ctx: StepContext, job: Job, failed: list[Job]) -> None:
    """A new run of each failed segment, in the parent's transition: on the same segment file,
    reserving its estimate anew (the failed run's was released when it settled)."""
    spec = CATALOG.resolve(job.model)
    assert spec is not None, f"model {job.model} left the catalog"
    estimates = {}
    async with ctx.sessionmaker() as session:
        for run in failed:
            duration = (run.input_probe or {}).get("duration_s")
            estimate = await estimate_job(
                session, spec, ctx.settings, video_duration_s=duration, payload=run.upstream_payload
            )
            estimates[run.id] = estimate.cost_micros or 0
    total = sum(estimates.values())

    async def find(session: AsyncSession, row: Job) -> tuple[lifecycle.Event, Any]:
        try:
            reserved = await budgets.adjust(
                session,
                tenant_id=row.tenant_id,
                period_start=row.budget_period_start,
                reserved_micros=0,
                new_estimate_micros=total,
            )
        except budgets.BudgetExceeded as exc:
            error = error_of("budget_exceeded", f"A failed segment cannot run again: {exc.detail}")
            return lifecycle.SegmentsEnded(JobStatus.failed.value, error), None
        retries = tuple(
            {"index": int((r.segment or {})["index"]), "failed_job": str(r.id), "error": r.error}
            for r in failed
        )

        async def insert_runs(session: AsyncSession, parent: Job) -> None:
            now = utcnow()
            left = reserved
            for run in failed:
                segment = run.segment or {}
                upload = await session.get(StoredFile, run.input_file_id)
                assert upload is not None, "a segment's file is the parent's; it outlives its runs"
                child = segment_job(
                    parent,
                    upload,
                    Segment(float(segment["start_s"]), float(segment["end_s"])),
                    int(segment["index"]),
                    int(segment["try"]) + 1,
                    now,
                )
                share = min(left, estimates[run.id]) if reserved == total else left
                left -= share
                child = replace(
                    child, estimated_cost_micros=estimates[run.id], reserved_micros=share
                )
                await insert(session, child)

        return lifecycle.SegmentRetried(retries), insert_runs

    await ctx.apply_found(job.id, find)
    indexes = [int((r.segment or {})["index"]) for r in failed]
    log.warning("segments failed at fal; running them again", job_id=str(job.id), segments=indexes)


async def _assemble(ctx: StepContext, job: Job, runs: list[Job]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"assemble-{job.id}-", dir=ctx.tmp_dir))
    try:
        try:
            stored, made = await _render(ctx, job, runs, workdir)
        except (MediaError, OutputUnavailableError) as exc:
            error = error_of("output_unavailable", f"Stitching the segments' sound: {exc}")
            await ctx.apply(job.id, lifecycle.SegmentsEnded(JobStatus.failed.value, error))
            return
        except TransientUpstreamError as exc:
            log.warning("stitching failed; will retry", job_id=str(job.id), error=str(exc))
            await ctx.apply(job.id, lifecycle.RetryLater(str(exc)))
            return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {"prompt": _prompt(runs)}
    for item in stored:
        result["video" if item.kind is FileKind.output_video else "audio"] = describe_output(item)
    result["soundtrack"] = made.describe()

    async def record_files(conn: asyncpg.Connection, row: Job) -> None:
        await files.replace_job_outputs(
            conn, row.tenant_id, row.id, [item.as_output() for item in stored]
        )

    applied = await ctx.apply(job.id, lifecycle.SegmentsAssembled(result), also=record_files)
    if applied.job.status.terminal:
        log.info("job succeeded: segments stitched", job_id=str(job.id), segments=len(runs))


async def _render(
    ctx: StepContext, job: Job, runs: list[Job], workdir: Path
) -> tuple[list[StoredOutput], soundtrack.Soundtrack]:
    """The segments' sound stitched onto the job's original video, stored."""
    options = OutputOptions.model_validate(job.output_options or {})
    async with ctx.sessionmaker() as session:
        sounds = [await _sound_file(session, run) for run in runs]
    upload = await ctx.input_upload(job)
    async with contextlib.AsyncExitStack() as stack:
        tracks = []
        for run, sound in zip(runs, sounds, strict=True):
            path = await stack.enter_async_context(_local(ctx, sound, workdir))
            segment = run.segment or {}
            span = Segment(float(segment["start_s"]), float(segment["end_s"]))
            tracks.append(SegmentAudio(span, path))
        picture = await stack.enter_async_context(
            soundtrack.original_video(ctx, job, upload, workdir)
        )
        made = await asyncio.to_thread(soundtrack.render, options, picture, tracks, workdir)
    prefix = f"jobs/{job.tenant_id}/{job.id}"
    stored = []
    for item in made.files:
        media = await asyncio.to_thread(probe, item.path)
        stored.append(
            await store_output(
                ctx, item.kind, f"{prefix}/{item.name}", item.path, item.content_type, media, None
            )
        )
    return stored, made


async def _sound_file(session: AsyncSession, run: Job) -> StoredFile:
    audio = (run.result or {}).get("audio") or (run.result or {}).get("video")
    file = None if audio is None else await session.get(StoredFile, audio["file_id"])
    if file is None:
        raise OutputUnavailableError(f"segment {run.id} has no stored sound", operation="assemble")
    return file


def _local(
    ctx: StepContext, file: StoredFile, workdir: Path
) -> contextlib.AbstractAsyncContextManager[Path]:
    try:
        files.ensure_present(file)
    except files.FileRemoved as exc:
        raise OutputUnavailableError(
            f"a segment's sound is gone: {exc.detail}", operation="assemble"
        ) from exc
    return files.local_copy(ctx.storage, file.storage_key, workdir)


def _prompt(runs: list[Job]) -> str | None:
    """The first segment's prompt used (a prompt given is every segment's)."""
    return next((p for r in runs if (p := (r.result or {}).get("prompt"))), None)
