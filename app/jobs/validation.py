"""``POST /v1/validate``: the worker's preflight, run now on a job that is not created, and the
verdict a job would get: valid (and what it would cost), or the code it would fail with. A video
longer than the model takes is valid, as the segments it would run as."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import ModelSpec
from app.config import Settings
from app.files import service as files_service
from app.jobs.choice import resolve_model
from app.jobs.preflight import InputRejected, InputUnavailable, preflight
from app.jobs.schemas import JobCreate
from app.jobs.service import build_job
from app.jobs.sources import check_input_source
from app.jobs.steps.split import segment_limits, splits
from app.jobs.store import NewJob
from app.kit.money import micros_to_usd
from app.media.segments import Segment, plan_from_cuts
from app.models import Tenant
from app.storage import Storage
from app.usage.estimates import estimate_job


async def validate(
    session: AsyncSession,
    tenant: Tenant,
    body: JobCreate,
    settings: Settings,
    storage: Storage,
    secret: bytes,
) -> dict[str, Any]:
    """`POST /v1/validate`: fetch and probe the input now, as the worker would before submitting,
    and answer the verdict and the estimate. Creates nothing, sends nothing upstream."""
    job = build_job(tenant.id, body)
    spec = resolve_model(job.model)
    upload = await check_input_source(session, tenant, job, settings)
    tmp = settings.data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    verdict: dict[str, Any] = {
        "object": "validation",
        "model": spec.id,
        "valid": True,
        "code": None,
        "message": None,
        "details": None,
        "probe": None,
    }
    duration = None
    try:
        checked = await preflight(
            spec=spec,
            job_input=job.input,
            upload=upload,
            settings=settings,
            storage=storage,
            fal=None,
            tmp_dir=tmp,
            job_id=job.id,
            secret=secret,
            audio_uploads=await files_service.named_audio_uploads(
                session, tenant.id, spec, job.input
            ),
        )
        verdict["probe"], duration = checked.probe, checked.duration_s
    except InputRejected as exc:
        planned = planned_segments(job, spec, exc, settings)
        if planned:
            verdict.update(
                message=f"Longer than {spec.id} takes: it runs as {len(planned)} segments, "
                "one request each (split where the picture cuts: boundaries may move).",
                segments=[s.to_dict() for s in planned],
            )
            return verdict | {
                "estimate": await _segments_estimate(session, spec, job, planned, settings)
            }
        verdict.update(
            valid=False, code=exc.code, message=exc.message, details=exc.measured or None
        )
    except InputUnavailable as exc:
        verdict.update(valid=False, code="video_unreachable", message=str(exc))
    estimate = await estimate_job(
        session, spec, settings, video_duration_s=duration, payload=job.upstream_payload
    )
    verdict["estimate"] = {
        "unit": estimate.unit,
        "units": str(estimate.units),
        "estimated_cost_usd": micros_to_usd(estimate.cost_micros),
        "basis": estimate.basis,
    }
    return verdict


def planned_segments(
    job: NewJob, spec: ModelSpec, rejected: InputRejected, settings: Settings
) -> list[Segment]:
    """The segments a job the preflight found too long would run as (evenly planned: the worker
    plans at scene cuts, which keeps the count), or none when it would not split."""
    duration = rejected.measured.get("duration_s")
    if duration is None or duration > settings.max_video_s:
        return []
    if not splits(job, spec, rejected.code, settings):  # type: ignore[arg-type]
        return []
    shortest, longest = segment_limits(spec, settings)
    try:
        return plan_from_cuts(
            duration,
            [],
            min_s=shortest,
            max_s=longest,
            overlap_s=settings.segment_overlap_s,
            max_total_s=settings.max_video_s,
        )
    except ValueError:
        return []


async def _segments_estimate(
    session: AsyncSession,
    spec: ModelSpec,
    job: NewJob,
    planned: list[Segment],
    settings: Settings,
) -> dict[str, Any]:
    estimates = [
        await estimate_job(
            session,
            spec,
            settings,
            video_duration_s=s.duration_s,
            payload=spec.payload_for_probe(job.upstream_payload, s.duration_s),
        )
        for s in planned
    ]
    costs = [e.cost_micros for e in estimates]
    return {
        "unit": estimates[0].unit,
        "units": str(sum((e.units for e in estimates), Decimal(0))),
        "estimated_cost_usd": None if None in costs else micros_to_usd(sum(costs)),  # type: ignore[arg-type]
        "basis": f"{len(planned)} segments: " + estimates[0].basis,
    }
