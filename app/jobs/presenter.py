"""Job row → the public job resource. URLs are absolute, built from the caller's base URL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.catalog.registry import CATALOG
from app.jobs import cache
from app.jobs.lifecycle.segments import runs_by_segment
from app.jobs.schemas import JobOut
from app.jobs.store import NewJob
from app.models import Job, JobStatus

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


def present_job(
    job: Job | NewJob,
    base_url: str,
    usage: dict[str, Any] | None = None,
    segments: list[dict[str, Any]] | None = None,
) -> JobOut:
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
            "segments": segments,
            "urls": {
                "self": self_url,
                "cancel": f"{self_url}/cancel",
                "events": f"{self_url}/events",
                # the same resource, asked for as text/event-stream
                "stream": f"{self_url}/events",
            },
        }
    )


def present_segments(
    runs: Sequence[Job], usage: dict[uuid.UUID, dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A split job's ``segments`` (each segment's latest run, the cost of all its runs) and its
    ``usage``: its segments' requests summed (settled once every one is)."""
    segments = []
    for tried in runs_by_segment(runs):
        last = tried[-1]
        spans = last.segment or {}
        segments.append(
            {
                "index": spans["index"],
                "start_s": spans["start_s"],
                "end_s": spans["end_s"],
                "status": last.status,
                "job_id": last.id,
                "tries": len(tried),
                "request_id": last.upstream_request_id,
                "cost_usd": _total([usage.get(r.id) for r in tried], "cost_usd", 6),
                "error": last.error if last.status is JobStatus.failed else None,
            }
        )
    records = [usage[r.id] for r in runs if r.id in usage]
    if not records:
        return segments, None
    statuses = {r["status"] for r in records}
    summed = {
        "unit": records[0]["unit"],
        "units": _total(records, "units", None),
        "estimated_cost_usd": _total(records, "estimated_cost_usd", 6),
        "cost_usd": _total(records, "cost_usd", 6),
        "cost_usd_exact": _total(records, "cost_usd_exact", 9),
        "status": "settled"
        if statuses == {"settled"}
        else ("unpriced" if "unpriced" in statuses else "estimated"),
    }
    return segments, summed


def _total(records: Sequence[dict[str, Any] | None], key: str, places: int | None) -> str | None:
    """The sum of a decimal member over records (None when any is missing: not known yet)."""
    values = [None if r is None else r.get(key) for r in records]
    if not values or any(v is None for v in values):
        return None
    total = sum((Decimal(v) for v in values if v is not None), Decimal(0))
    return f"{total.normalize():f}" if places is None else f"{total:.{places}f}"
