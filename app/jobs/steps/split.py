"""A video longer than its model takes, made into segments (app.jobs.lifecycle.segments).

The preflight measured the video too long for the model, and the model runs on pieces of a
video (the catalog's ``segments``): the video is planned into segments within the model's limits
(at scene cuts where there are any, else evenly, neighbours overlapping), each segment cut out
and stored as a file of the tenant's, and each becomes a job of its own — the normal lifecycle,
its own request at fal, billed on its own — inserted in the same transaction as the parent's
'split', each holding its share of the parent's reservation. A URL input is stored too: the
finished sound is muxed onto the untouched original (app.jobs.steps.assemble).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import ModelSpec
from app.config import Settings
from app.files.service import VIDEO_TYPES
from app.jobs import lifecycle
from app.jobs.lifecycle.fallback import next_candidate
from app.jobs.preflight import InputRejected
from app.jobs.steps import soundtrack
from app.jobs.steps.context import StepContext, policy_of
from app.jobs.store import NewJob, insert
from app.kit.clock import utcnow
from app.media.cutting import cut_segment
from app.media.errors import MediaError, SegmentPlanError, VideoTooLongError
from app.media.probe import MediaInfo, probe
from app.media.segments import Segment, plan_from_cuts, plan_segments
from app.models import FileKind, Job, StoredFile, SubmitState
from app.upstream.errors import OutputUnavailableError, TransientUpstreamError
from app.usage import budgets
from app.usage.estimates import Estimate, estimate_job

log = structlog.get_logger(__name__)

# Planned segments stay this far inside the model's limits: a stream-copied cut may come out a
# frame longer (or shorter) than planned, and the segment's own preflight measures it again.
_MARGIN_S = 0.25
# A stored original's file name by its container.
_EXT = {"mp4": "mp4", "mov": "mov", "webm": "webm", "matroska": "mkv", "avi": "avi", "3gp": "3gp"}


def splits(job: Job | NewJob, spec: ModelSpec, code: str, settings: Settings) -> bool:
    """Whether a job the preflight refused with ``code`` runs as segments instead: the video is
    too long, the model runs on pieces, the job is not a segment itself, and no model the job
    named after this one is left to take the video whole (fewer requests first)."""
    return (
        code == "video_too_long"
        and spec.segments
        and job.parent_id is None
        and next_candidate(job, policy_of(settings)) is None
    )


def segment_limits(spec: ModelSpec, settings: Settings) -> tuple[float, float]:
    """The shortest and longest segment the model takes, inside its limits by the margin."""
    limits = spec.limits
    longest = limits.max_duration_s
    if limits.max_duration_setting:
        longest = getattr(settings, limits.max_duration_setting)
    assert longest is not None, f"{spec.id} runs on segments but has no longest input"
    shortest = (limits.min_duration_s or 0.0) + _MARGIN_S
    return shortest, longest - _MARGIN_S


def planned_segments(
    job: Job | NewJob, spec: ModelSpec, duration_s: float, settings: Settings
) -> list[Segment]:
    """The segments a job whose video is ``duration_s`` long would run as, planned evenly (the
    split plans at scene cuts, with as many segments: the count is the fewest either way); none
    when it would run whole or not at all."""
    if duration_s > settings.max_video_s or not spec.segments:
        return []
    shortest, longest = segment_limits(spec, settings)
    if duration_s <= longest + _MARGIN_S or not splits(job, spec, "video_too_long", settings):
        return []
    try:
        return plan_from_cuts(
            duration_s,
            [],
            min_s=shortest,
            max_s=longest,
            overlap_s=settings.segment_overlap_s,
            max_total_s=settings.max_video_s,
        )
    except ValueError:  # the model's limits leave no room for overlapping segments
        return []


async def segments_estimate(
    session: AsyncSession,
    spec: ModelSpec,
    payload: dict[str, Any],
    planned: list[Segment],
    settings: Settings,
) -> Estimate:
    """What the segments would cost together: each priced as the job of its own it will be."""
    estimates = [
        await estimate_job(
            session,
            spec,
            settings,
            video_duration_s=s.duration_s,
            payload=spec.payload_for_probe(payload, s.duration_s),
        )
        for s in planned
    ]
    costs = [e.cost_micros for e in estimates]
    first = estimates[0]
    return Estimate(
        model=first.model,
        unit=first.unit,
        units=sum((e.units for e in estimates), Decimal(0)),
        unit_price_micros=first.unit_price_micros,
        cost_micros=None if any(c is None for c in costs) else sum(c or 0 for c in costs),
        video_duration_s=planned[-1].end_s,
        basis=f"{len(planned)} segments: {first.basis}",
    )


@dataclass
class _Piece:
    """A segment cut and stored, and its job to be."""

    index: int
    segment: Segment
    file: StoredFile
    estimate_micros: int


async def split(ctx: StepContext, job: Job, spec: ModelSpec) -> None:
    """Plan, cut and store the segments, then write the parent's 'split' with its segments'
    jobs (or the input's rejection: longer than the gateway splits, or no plan fits)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"split-{job.id}-", dir=ctx.tmp_dir))
    stored: list[str] = []
    try:
        try:
            original, pieces, probe_out = await _cut(ctx, job, spec, workdir, stored)
        except InputRejected as exc:
            await _reject(ctx, job, exc.code, exc.message, exc.measured)
            return
        except VideoTooLongError:
            limit = ctx.settings.max_video_s
            await _reject(
                ctx,
                job,
                "video_too_long",
                f"The input is longer than the {limit:g} s the gateway splits into segments.",
                {"max_duration_s": limit},
            )
            return
        except SegmentPlanError as exc:
            await _reject(ctx, job, "video_unsplittable", f"The input cannot be split: {exc}", {})
            return
        except MediaError as exc:
            await _reject(
                ctx, job, "video_unreadable", f"The input is not a readable video: {exc}", {}
            )
            return
        except ValueError as exc:  # the model's limits leave no room for overlapping segments
            await _reject(ctx, job, "video_unsplittable", f"The input cannot be split: {exc}", {})
            return
        except OutputUnavailableError as exc:
            await _reject(ctx, job, "video_unreachable", str(exc), {})
            return
        except TransientUpstreamError as exc:
            await ctx.apply(job.id, lifecycle.InputUnavailable(str(exc)))
            return
        applied = await _write(ctx, job, spec, original, pieces, probe_out)
        if applied is not None and applied.job.submit_state is SubmitState.split:
            stored.clear()  # the files are the segments' now
            log.info("split into segments", job_id=str(job.id), segments=len(pieces))
    finally:
        for key in stored:  # refused (budget) or failed: nothing refers to them
            with contextlib.suppress(Exception):
                await ctx.storage.delete(key)
        shutil.rmtree(workdir, ignore_errors=True)


async def _reject(
    ctx: StepContext, job: Job, code: str, message: str, details: dict[str, Any]
) -> None:
    log.info("input rejected before any upstream request", job_id=str(job.id), code=code)
    await ctx.apply(job.id, lifecycle.InputRejected(code, message, details))


async def _cut(
    ctx: StepContext, job: Job, spec: ModelSpec, workdir: Path, stored: list[str]
) -> tuple[StoredFile | None, list[_Piece], dict[str, Any]]:
    """The original (stored, when the input is a URL), the segments cut and stored (their keys
    in ``stored`` as they are written), and the original's probe. The segments' files are the
    parent's (its retention is theirs); each segment's job names its own."""
    settings = ctx.settings
    shortest, longest = segment_limits(spec, settings)
    upload = await ctx.input_upload(job)
    # A key of this run's own: a worker that lost the job's lease mid-split (and deletes what it
    # stored) never touches the objects of the worker that took the job over.
    prefix = f"jobs/{job.tenant_id}/{job.id}/split-{secrets.token_hex(4)}"
    async with soundtrack.original_video(ctx, job, upload, workdir) as path:
        media: MediaInfo = await asyncio.to_thread(probe, path)
        size = path.stat().st_size
        limit = settings.max_video_s
        if media.duration_s is not None and media.duration_s > limit:
            raise InputRejected(
                "video_too_long",
                f"The input is {media.duration_s:.2f} s; the gateway takes videos of at most "
                f"{limit:g} s (longer than {spec.id} takes, they run as segments).",
                duration_s=media.duration_s,
                max_duration_s=limit,
            )
        plan = await asyncio.to_thread(
            plan_segments,
            path,
            min_s=shortest,
            max_s=longest,
            overlap_s=settings.segment_overlap_s,
            max_total_s=settings.max_video_s,
        )
        original = None
        if upload is None:
            original = await _store(
                ctx, job, f"{prefix}/original.{_EXT.get(media.container or '', 'bin')}", path, media
            )
            stored.append(original.storage_key)
        pieces = []
        for index, segment in enumerate(plan):
            out = workdir / f"segment-{index}.mp4"
            await asyncio.to_thread(cut_segment, path, segment, out)
            cut_media = await asyncio.to_thread(probe, out)
            file = await _store(ctx, job, f"{prefix}/segment-{index}.mp4", out, cut_media)
            stored.append(file.storage_key)
            pieces.append(_Piece(index, segment, file, 0))
    async with ctx.sessionmaker() as session:
        for piece in pieces:
            duration = MediaInfo.from_dict(piece.file.media or {}).duration_s
            payload = spec.payload_for_probe(job.upstream_payload, duration)
            estimate = await estimate_job(
                session, spec, settings, video_duration_s=duration, payload=payload
            )
            piece.estimate_micros = estimate.cost_micros or 0
    probe_out = {**media.to_dict(), "size_bytes": size}
    return original, pieces, probe_out


async def _store(ctx: StepContext, job: Job, key: str, path: Path, media: MediaInfo) -> StoredFile:
    content_type = VIDEO_TYPES.get(media.container or "", "application/octet-stream")
    obj = await ctx.storage.put_file(key, path, content_type=content_type)
    return StoredFile(
        id=uuid.uuid4(),
        tenant_id=job.tenant_id,
        job_id=job.id,
        kind=FileKind.input_upload,
        storage_key=obj.key,
        filename=key.rsplit("/", 1)[-1],
        content_type=content_type,
        size_bytes=obj.size_bytes,
        sha256=obj.sha256,
        media=media.to_dict(),
    )


async def _write(
    ctx: StepContext,
    job: Job,
    spec: ModelSpec,
    original: StoredFile | None,
    pieces: list[_Piece],
    probe_out: dict[str, Any],
) -> Any:
    total = sum(p.estimate_micros for p in pieces)
    segments = tuple(
        {"index": p.index, "start_s": p.segment.start_s, "end_s": p.segment.end_s} for p in pieces
    )

    async def find(session: AsyncSession, row: Job) -> tuple[lifecycle.Event, Any] | None:
        try:
            reserved = await budgets.adjust(
                session,
                tenant_id=row.tenant_id,
                period_start=row.budget_period_start,
                reserved_micros=row.reserved_micros,
                new_estimate_micros=total,
            )
        except budgets.BudgetExceeded as exc:
            return lifecycle.BudgetRefused(exc.code, exc.detail, exc.extra), None
        files = ([original] if original is not None else []) + [p.file for p in pieces]
        session.add_all(files)
        await session.flush()
        event = lifecycle.Split(
            segments,
            probe_out,
            total,
            original_file_id=None if original is None else original.id,
        )

        async def insert_segments(session: AsyncSession, parent: Job) -> None:
            if parent.submit_state is not SubmitState.split:
                return
            shares = _shares(pieces, reserved, total)
            now = utcnow()
            for piece, share in zip(pieces, shares, strict=True):
                child = segment_job(parent, piece.file, piece.segment, piece.index, 1, now)
                child = replace(
                    child, estimated_cost_micros=piece.estimate_micros, reserved_micros=share
                )
                await insert(session, child)

        return event, insert_segments

    return await ctx.apply_found(job.id, find)


def _shares(pieces: list[_Piece], reserved: int, total: int) -> list[int]:
    """Each segment's share of what was reserved: its own estimate when the whole was reserved
    (the budget's usual case), else all of it on the first (released when that one settles)."""
    if reserved == total:
        return [p.estimate_micros for p in pieces]
    return [reserved] + [0] * (len(pieces) - 1)


def segment_job(
    parent: Job, file: StoredFile, segment: Segment, index: int, tries: int, now: datetime
) -> NewJob:
    """The job of one segment: the parent's model and parameters on the segment's file, and
    nothing the tenant is told about directly (no webhook; its parent's events tell)."""
    job_input = {k: v for k, v in parent.input.items() if k not in ("video_url", "video_file_id")}
    job_input["video_file_id"] = str(file.id)
    payload = {k: v for k, v in parent.upstream_payload.items() if k != "video_url"}
    return NewJob(
        id=uuid.uuid4(),
        tenant_id=parent.tenant_id,
        model=parent.model,
        endpoint=parent.endpoint,
        input=job_input,
        upstream_payload=payload,
        job_metadata={},
        input_file_id=file.id,
        created_at=now,
        budget_period_start=parent.budget_period_start,
        cancel_after_at=parent.cancel_after_at,
        traceparent=parent.traceparent,
        parent_id=parent.id,
        segment={"index": index, "start_s": segment.start_s, "end_s": segment.end_s, "try": tries},
    )
