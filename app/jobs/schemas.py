"""The job resource: one shape for every model (Replicate's prediction, which users know)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.text import METADATA_DESCRIPTION, Metadata, column_text
from app.models import Job, JobStatus

ModelName = column_text(Job.model)


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "thinksound",
                    "input": {"video_url": "https://example.com/clip.mp4", "prompt": "rain"},
                    "metadata": {"order": "42"},
                },
                {
                    "model": "kling-video-to-audio",
                    "input": {
                        "video_url": "https://example.com/clip.mp4",
                        "prompt": "footsteps on gravel",
                        "music_prompt": "calm piano",
                    },
                },
            ]
        },
    )

    model: ModelName = Field(description="A model id or alias from GET /v1/models.")  # type: ignore[valid-type]
    input: dict[str, Any] = Field(
        description="The normalized input: video_url, prompt, seed, plus the model's own fields "
        "(see each model's input_schema). Unknown fields are rejected."
    )
    metadata: Metadata = Field(default_factory=dict, description=METADATA_DESCRIPTION)


class JobError(BaseModel):
    code: str
    message: str
    upstream: dict[str, Any] | None = None
    details: dict[str, Any] | None = Field(
        default=None, description="What was measured (e.g. duration_s, max_duration_s)."
    )


class Upstream(BaseModel):
    provider: Literal["fal"] = "fal"
    endpoint: str
    request_id: str | None
    queue_position: int | None


class Metrics(BaseModel):
    queue_s: float | None = Field(None, description="Accepted → running at fal.")
    run_s: float | None = Field(None, description="Running at fal → completed.")
    inference_s: float | None = Field(None, description="fal's metrics.inference_time.")
    total_s: float | None = Field(None, description="Accepted → completed.")


class JobUrls(BaseModel):
    self: str
    cancel: str
    events: str = Field(description="The job's history: every transition, in order.")


class MediaOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_id: uuid.UUID
    url: str
    content_type: str
    size_bytes: int
    duration_s: float | None = None


class ResultOut(BaseModel):
    prompt: str | None = None
    video: MediaOut | None = None
    audio: MediaOut | None = None


class LogLine(BaseModel):
    model_config = ConfigDict(extra="allow")
    message: str
    level: str | None = None
    timestamp: str | None = None


class JobUsage(BaseModel):
    unit: str
    units: str | None = Field(description="Billed units, a decimal string (once settled).")
    estimated_cost_usd: str | None
    cost_usd: str | None = Field(description="What fal billed, in USD (once settled).")
    status: Literal["estimated", "settled", "unpriced"]


class JobOut(BaseModel):
    object: Literal["job"] = "job"
    id: uuid.UUID
    model: str
    status: JobStatus
    input: dict[str, Any]
    result: ResultOut | None
    error: JobError | None
    upstream: Upstream
    logs: list[LogLine]
    metrics: Metrics
    data_removed: bool = Field(
        default=False, description="Its files were deleted by the retention policy."
    )
    probe: dict[str, Any] | None = Field(
        default=None, description="The input as measured before it was sent (preflight)."
    )
    usage: JobUsage | None = Field(
        default=None, description="The job's upstream request on the ledger (once sent to fal)."
    )
    metadata: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    urls: JobUrls


class JobEventOut(BaseModel):
    """One transition of a job, as its event log recorded it."""

    object: Literal["job_event"] = "job_event"
    id: int = Field(description="Orders every event of the gateway (across jobs).")
    job_id: uuid.UUID
    seq: int = Field(description="The event's number in its job's history, from 1, no gaps.")
    type: str = Field(
        description="job.created, job.submitting, job.started, job.processing, job.logs, "
        "job.cancel_requested, job.submit_retrying, job.submit_ambiguous, job.attached, "
        "job.succeeded, job.failed, job.canceled"
    )
    data: dict[str, Any]
    created_at: datetime
