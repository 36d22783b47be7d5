"""``POST /v1/validate``: the worker's preflight, run now on a job that is not created, and the
verdict a job would get: valid (and what it would cost), or the code it would fail with. A video
longer than the model takes is valid, as the segments it would run as."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.files import service as files_service
from app.jobs.choice import resolve_model
from app.jobs.preflight import InputRejected, InputUnavailable, preflight
from app.jobs.schemas import JobCreate
from app.jobs.service import build_job
from app.jobs.sources import check_input_source
from app.jobs.steps.split import planned_segments, segments_estimate
from app.kit.money import micros_to_usd
from app.models import Tenant
from app.storage import Storage
from app.usage.estimates import Estimate, estimate_job


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
        duration = exc.measured.get("duration_s")
        planned = planned_segments(job, spec, duration, settings) if duration else []
        if planned:
            verdict.update(
                message=f"Longer than {spec.id} takes: it runs as {len(planned)} segments, "
                "one request each (split where the picture cuts: boundaries may move).",
                segments=[s.to_dict() for s in planned],
            )
            estimate = await segments_estimate(
                session, spec, job.upstream_payload, planned, settings
            )
            return verdict | {"estimate": _shown(estimate)}
        verdict.update(
            valid=False, code=exc.code, message=exc.message, details=exc.measured or None
        )
    except InputUnavailable as exc:
        verdict.update(valid=False, code="video_unreachable", message=str(exc))
    estimate = await estimate_job(
        session, spec, settings, video_duration_s=duration, payload=job.upstream_payload
    )
    verdict["estimate"] = _shown(estimate)
    return verdict


def _shown(estimate: Estimate) -> dict[str, Any]:
    return {
        "unit": estimate.unit,
        "units": str(estimate.units),
        "estimated_cost_usd": micros_to_usd(estimate.cost_micros),
        "basis": estimate.basis,
    }
