"""Job row → the public job resource. URLs are absolute, built from the caller's base URL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.catalog.registry import CATALOG
from app.jobs import cache
from app.jobs.schemas import JobOut
from app.jobs.store import NewJob
from app.models import Job

RECENT_LOGS = 50


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds(), 3)


def _media(entry: dict[str, Any] | None, base_url: str) -> dict[str, Any] | None:
    if not entry:
        return None
    return {**entry, "url": f"{base_url}/v1/files/{entry['file_id']}"}


def job_url(base_url: str, job_id: uuid.UUID) -> str:
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}"


def present_job(job: Job | NewJob, base_url: str, usage: dict[str, Any] | None = None) -> JobOut:
    base_url = base_url.rstrip("/")
    result = None
    if job.result is not None:
        result = {
            "prompt": job.result.get("prompt"),
            "video": _media(job.result.get("video"), base_url),
            "audio": _media(job.result.get("audio"), base_url),
            "samples": None,
            "soundtrack": job.result.get("soundtrack"),
        }
        if job.result.get("samples"):
            result["samples"] = [
                {"audio": _media(sample.get("audio"), base_url)} for sample in job.result["samples"]
            ]
    self_url = job_url(base_url, job.id)
    cached = None
    if job.cache_requested:
        spec = CATALOG.resolve(job.model)
        reason = None if spec is None else cache.skipped_reason(spec, job.input)
        cached = cache.presented(True, job.cache_source_id, reason)
    # One validation of plain data (not a model per part): this runs for every job shown.
    return JobOut.model_validate(
        {
            "id": job.id,
            "model": job.model,
            "status": job.status,
            "input": job.input,
            "result": result,
            "error": job.error or None,
            "upstream": {
                "endpoint": job.endpoint,
                "request_id": job.upstream_request_id,
                "queue_position": job.queue_position,
            },
            "logs": (job.logs or [])[-RECENT_LOGS:],
            "metrics": {
                "queue_s": _seconds(job.created_at, job.started_at),
                "run_s": _seconds(job.started_at, job.completed_at),
                "inference_s": job.inference_s,
                "total_s": _seconds(job.created_at, job.completed_at),
            },
            "usage": usage,
            "cache": cached,
            "data_removed": job.data_removed,
            "probe": job.input_probe,
            "metadata": job.job_metadata,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "completed_at": job.completed_at,
            "cancel_after_at": job.cancel_after_at,
            "output": job.output_options,
            "models": [c["model"] for c in job.candidates] if job.candidates else None,
            "attempts": job.attempts or [],
            "urls": {
                "self": self_url,
                "cancel": f"{self_url}/cancel",
                "events": f"{self_url}/events",
                # the same resource, asked for as text/event-stream
                "stream": f"{self_url}/events",
            },
        }
    )
