"""The job resource: one shape for every model (Replicate's prediction, which users know)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.catalog.registry import CATALOG, ModelSpec
from app.jobs.output_options import OutputOptions, SoundtrackOut
from app.kit.examples import with_examples
from app.kit.text import METADATA_DESCRIPTION, Metadata, bounded_text, column_text
from app.models import Job, JobStatus
from app.notifications.events import FILTER_DESCRIPTION, JOB_FILTERS

ModelName = column_text(Job.model)
WebhookUrl = bounded_text(2048, min_length=1)
MAX_MODELS = 10
ModelList = Annotated[list[ModelName], Field(min_length=1, max_length=MAX_MODELS)]  # type: ignore[valid-type]
WebhookFilter = Literal[tuple(JOB_FILTERS)]  # type: ignore[valid-type]


class JobCreate(BaseModel):
    model_config = with_examples(
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
        {
            "model": "thinksound",
            "input": {"video_url": "https://example.com/clip.mp4", "prompt": "rain", "seed": 7},
            "cache": True,
        },
        {
            "model": "mirelo-sfx",
            "input": {"video_url": "https://example.com/clip.mp4", "prompt": "rain", "samples": 3},
        },
    )

    model: ModelList | ModelName = Field(  # type: ignore[valid-type]
        union_mode="left_to_right",
        description="A model id or alias from GET /v1/models; or several, in order (the job "
        "moves on to the next when one cannot run it: its limits or the budget refuse the "
        "video, or fal fails for a reason that is not the input's); or auto (every model that "
        "makes a video with sound and takes the input, in the catalog's order).",
        examples=["thinksound", ["kling-video-to-audio", "thinksound"], "auto"],
    )
    input: dict[str, Any] = Field(
        description="The normalized input: video_url, prompt, seed, plus the model's own fields "
        "(see each model's input_schema). Unknown fields are rejected."
    )
    metadata: Metadata = Field(default_factory=dict, description=METADATA_DESCRIPTION)
    webhook: WebhookUrl | None = Field(  # type: ignore[valid-type]
        default=None,
        description="A URL told of this job's events (Standard Webhooks, signed with your "
        "default secret: GET /v1/webhooks/default/secret). Loopback and private addresses are "
        "refused unless the gateway allows them.",
    )
    webhook_events_filter: list[WebhookFilter] | None = Field(
        default=None, min_length=1, description=FILTER_DESCRIPTION
    )
    prefer: ModelList | None = Field(  # type: ignore[valid-type]
        default=None,
        description="With model auto: the models to try first, in this order (each must be one "
        "auto would try); auto's others follow in the catalog's order.",
        examples=[["kling-video-to-audio"]],
    )
    cache: StrictBool | None = Field(
        default=None,
        description="true: reuse a stored success with the same input content, model, "
        "parameters and seed, at once and without a request to fal (a model that takes a seed "
        "needs an explicit one); false: never; omitted: the tenant's cache_default.",
        examples=[True],
    )
    output: OutputOptions | None = Field(
        default=None,
        description="What the finished sound is to be: mixed under the video's own track or "
        "replacing it, or the audio alone; its format, sample rate and loudness (normalized to "
        "-16 LUFS unless said otherwise). Without it the model's outputs are kept as they came.",
    )

    @model_validator(mode="after")
    def _filter_needs_webhook(self) -> JobCreate:
        if self.webhook_events_filter is not None and self.webhook is None:
            raise ValueError("webhook_events_filter needs a webhook")
        return self

    @field_validator("prefer")
    @classmethod
    def _prefer_needs_auto(cls, prefer: list[str] | None, info: Any) -> list[str] | None:
        if prefer is not None and info.data.get("model") != "auto":
            raise PydanticCustomError("prefer_needs_auto", "prefer goes with model auto", {})
        return prefer


# The fields every model's job takes besides its input and metadata.
COMMON_FIELDS = ("webhook", "webhook_events_filter", "output", "cache")


def _variant(spec: ModelSpec, name: str) -> type[BaseModel]:
    """JobCreate for one name of a model: ``model`` is that name, ``input`` the model's input."""
    slug = "".join(w.capitalize() for w in re.split(r"[^a-z0-9]+", name.lower()) if w)
    what = spec.title if name == spec.id else f"{spec.title} (an alias of {spec.id})"
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"JobCreate{slug}",
        __doc__=f"A {what} job. {spec.description}",
        __config__=ConfigDict(extra="forbid"),
        model=(Literal[name], Field(description=f"{what}.")),
        input=(spec.input_model, Field(description=f"{spec.title}'s input.")),
        metadata=(Metadata, Field(default_factory=dict, description=METADATA_DESCRIPTION)),
        **{
            name: (JobCreate.model_fields[name].annotation, JobCreate.model_fields[name])
            for name in COMMON_FIELDS
        },
    )


def _several() -> type[BaseModel]:
    """JobCreate naming several models in order, or auto: the input is what each of them takes
    (the fields they share: video_url or video_file_id, prompt …)."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        "JobCreateSeveralModels",
        __doc__="A job that may run on several models: the first that can run it does (see "
        "`model`). Its input must suit every model it names (auto: the models it suits).",
        __config__=ConfigDict(extra="forbid"),
        model=(
            Annotated[list[ModelName], Field(min_length=1, max_length=MAX_MODELS)]  # type: ignore[valid-type]
            | Literal["auto"],
            Field(description=JobCreate.model_fields["model"].description),
        ),
        input=(dict[str, Any], JobCreate.model_fields["input"]),
        metadata=(Metadata, Field(default_factory=dict, description=METADATA_DESCRIPTION)),
        **{
            name: (JobCreate.model_fields[name].annotation, JobCreate.model_fields[name])
            for name in (*COMMON_FIELDS, "prefer")
        },
    )


def job_create_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI schema of a job creation: one variant per name of a model (its id and each
    alias), chosen by ``model`` (a discriminator whose mapping is one name to one variant: tools
    take a mapping's value for the branch's only tag). Requests are parsed by JobCreate, then by
    the model's own input class (app.jobs.service), which is what these variants describe."""
    variants = tuple(_variant(spec, name) for spec in CATALOG for name in (spec.id, *spec.aliases))
    one = Annotated[Union[variants], Field(discriminator="model")]  # type: ignore[valid-type]  # noqa: UP007
    union = Union[one, _several()]  # type: ignore[valid-type]  # noqa: UP007
    schema = TypeAdapter(union).json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    schema["description"] = "A job: the model, its input (per model), your metadata."
    schema["examples"] = JobCreate.model_config["json_schema_extra"]["examples"]  # type: ignore[index]
    return schema, defs


class JobError(BaseModel):
    code: str = Field(
        description="Why the job failed, as a stable code (e.g. upstream_validation)."
    )
    message: str = Field(description="Why the job failed, for people.")
    upstream: dict[str, Any] | None = Field(
        default=None, description="fal's answer when it caused the failure: status_code, detail …"
    )
    details: dict[str, Any] | None = Field(
        default=None, description="What was measured (e.g. duration_s, max_duration_s)."
    )


class Upstream(BaseModel):
    provider: Literal["fal"] = Field(default="fal", description="Who runs the model.")
    endpoint: str = Field(description="fal's endpoint the job is sent to.")
    request_id: str | None = Field(description="fal's request id, once fal accepted the job.")
    queue_position: int | None = Field(description="The job's place in fal's queue, if queued.")


class Metrics(BaseModel):
    queue_s: float | None = Field(None, description="Accepted → running at fal.")
    run_s: float | None = Field(None, description="Running at fal → completed.")
    inference_s: float | None = Field(None, description="fal's metrics.inference_time.")
    total_s: float | None = Field(None, description="Accepted → completed.")


class JobUrls(BaseModel):
    self: str = Field(description="The job (GET).")
    cancel: str = Field(description="Cancels the job (POST).")
    events: str = Field(description="The job's history: every transition, in order.")
    stream: str = Field(
        description="The job's events live, as Server-Sent Events (GET with "
        "Accept: text/event-stream; the same URL as events)."
    )


class MediaOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_id: uuid.UUID = Field(description="The stored file's id (GET /v1/files/{id}).")
    url: str = Field(description="Where to download it from the gateway.")
    content_type: str = Field(description="Its media type (video/mp4, audio/mpeg …).")
    size_bytes: int = Field(description="Its size in bytes.")
    duration_s: float | None = Field(default=None, description="Its length in seconds.")


class SampleOut(BaseModel):
    audio: MediaOut = Field(description="This sample's sound (one output of several).")


class ResultOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "footsteps on gravel",
                    "video": None,
                    "audio": {
                        "file_id": "0b7c2f4e-2d1a-4f7e-9a51-1c1f0e3b9d10",
                        "url": "https://foley.example/v1/files/0b7c2f4e-2d1a-4f7e-9a51-1c1f0e3b9d10",
                        "content_type": "audio/wav",
                        "size_bytes": 705644,
                        "duration_s": 4.0,
                    },
                    "samples": [
                        {
                            "audio": {
                                "file_id": "0b7c2f4e-2d1a-4f7e-9a51-1c1f0e3b9d10",
                                "url": "https://foley.example/v1/files/"
                                "0b7c2f4e-2d1a-4f7e-9a51-1c1f0e3b9d10",
                                "content_type": "audio/wav",
                                "size_bytes": 705644,
                                "duration_s": 4.0,
                            }
                        },
                        {
                            "audio": {
                                "file_id": "5e0d9a7b-8c3f-4b21-a6d4-7f2e1b0c9a83",
                                "url": "https://foley.example/v1/files/"
                                "5e0d9a7b-8c3f-4b21-a6d4-7f2e1b0c9a83",
                                "content_type": "audio/wav",
                                "size_bytes": 705644,
                                "duration_s": 4.0,
                            }
                        },
                    ],
                }
            ]
        }
    )

    prompt: str | None = Field(default=None, description="The prompt the model used.")
    video: MediaOut | None = Field(default=None, description="The video with its new sound.")
    audio: MediaOut | None = Field(
        default=None,
        description="The sound on its own (for a model making several samples: the first).",
    )
    samples: list[SampleOut] | None = Field(
        default=None,
        description="Every output of a model making several per job (Mirelo, Sonilo: "
        "input.samples of them), in fal's order; null for single-output models.",
    )
    soundtrack: SoundtrackOut | None = Field(
        default=None,
        description="How the finished sound was made (mode, format, loudness), when the job "
        "asked for output options.",
    )


class LogLine(BaseModel):
    model_config = ConfigDict(extra="allow")
    message: str = Field(description="A line the model logged at fal.")
    level: str | None = Field(default=None, description="Its level (INFO, ERROR …).")
    timestamp: str | None = Field(default=None, description="When fal logged it.")


class JobUsage(BaseModel):
    unit: str = Field(description="What the model is billed by: video, compute_second …")
    units: str | None = Field(description="Billed units, a decimal string (once settled).")
    estimated_cost_usd: str | None = Field(description="The estimate reserved at creation.")
    cost_usd: str | None = Field(description="What fal billed, in USD (once settled).")
    cost_usd_exact: str | None = Field(
        default=None,
        description="What fal billed to the nano-dollar, fal's precision (once settled): "
        "cost_usd is this rounded half-up to six decimals.",
    )
    status: Literal["estimated", "settled", "unpriced"] = Field(
        description="estimated until fal's bill is known, then settled (unpriced: no price yet)."
    )


class CacheOut(BaseModel):
    hit: bool = Field(description="The result is a stored success's, reused (nothing sent to fal).")
    source_job: uuid.UUID | None = Field(
        default=None, description="The job that ran upstream and produced the result, on a hit."
    )
    reason: str | None = Field(
        default=None,
        description="Why the cache could not be used: seed_required (the model takes a seed and "
        "none was given).",
    )


class FallbackAttempt(BaseModel):
    """A model the job fell back from."""

    model: str = Field(description="The model it ran on.")
    endpoint: str = Field(description="fal's endpoint.")
    request_id: str | None = Field(description="fal's request (null: none was created).")
    error: JobError = Field(description="Why the job moved on.")
    started_at: datetime | None = Field(description="When it started running at fal.")
    ended_at: datetime = Field(description="When the job moved on.")
    cost_usd: str | None = Field(
        description="What fal billed for it (null: nothing was created, or no price yet)."
    )


class SegmentOut(BaseModel):
    """A segment of a video longer than the model takes: one request at fal of its own."""

    index: int = Field(description="Its place in the video, from 0.")
    start_s: float = Field(description="Where it starts in the video, in seconds.")
    end_s: float = Field(description="Where it ends (it overlaps its neighbours, crossfaded).")
    status: JobStatus = Field(description="Its latest run's status.")
    job_id: uuid.UUID = Field(description="Its latest run, a job of its own (readable by id).")
    tries: int = Field(description="Its runs: 2 when it failed at fal unbilled and ran again.")
    request_id: str | None = Field(description="fal's request of its latest run.")
    cost_usd: str | None = Field(
        description="What fal billed for all its runs (null: not settled yet, or no price)."
    )
    error: JobError | None = Field(default=None, description="Why its latest run failed.")


class JobOut(BaseModel):
    object: Literal["job"] = Field(default="job", description="Always job.")
    id: uuid.UUID = Field(description="The job's id.")
    model: str = Field(description="The model's id (an alias given at creation is resolved).")
    status: JobStatus = Field(
        description="queued, starting, processing, then succeeded, failed, canceled or "
        "aborted (final; aborted: its Cancel-After passed before it started, at no cost)."
    )
    input: dict[str, Any] = Field(description="The normalized input, as validated.")
    result: ResultOut | None = Field(description="The outputs, once succeeded.")
    error: JobError | None = Field(description="Why it failed, once failed.")
    upstream: Upstream = Field(description="The job at fal.")
    logs: list[LogLine] = Field(description="The model's latest log lines at fal.")
    metrics: Metrics = Field(description="How long each stage took.")
    data_removed: bool = Field(
        default=False, description="Its files were deleted by the retention policy."
    )
    probe: dict[str, Any] | None = Field(
        default=None, description="The input as measured before it was sent (preflight)."
    )
    usage: JobUsage | None = Field(
        default=None,
        description="The job's upstream request on the ledger (once sent to fal), or its "
        "result-cache hit (unit hit).",
    )
    cache: CacheOut | None = Field(
        default=None,
        description="The result cache, when the job asked for it: {hit: true, source_job} when "
        "a stored success answered it, else {hit: false}. null: not asked for.",
    )
    metadata: dict[str, Any] = Field(description="Your key/value pairs, as given.")
    created_at: datetime = Field(description="When the job was accepted.")
    started_at: datetime | None = Field(description="When it started running at fal.")
    completed_at: datetime | None = Field(description="When it reached a final status.")
    cancel_after_at: datetime | None = Field(
        default=None, description="When it is canceled if still unfinished (Cancel-After)."
    )
    output: OutputOptions | None = Field(
        default=None,
        description="The output options it was created with, every default filled in (null: "
        "the model's outputs as they came).",
    )
    models: list[str] | None = Field(
        default=None,
        description="The models the job may run on, in order, when it named several (or auto); "
        "`model` is the one it is on.",
    )
    attempts: list[FallbackAttempt] = Field(
        default_factory=list,
        description="The models it fell back from, in order: each with its request, the error "
        "that moved the job on, and what fal billed for it.",
    )
    segments: list[SegmentOut] | None = Field(
        default=None,
        description="The video was longer than the model takes: the segments it ran as, one "
        "request each, their sound stitched with crossfades over the overlaps (null: one "
        "request). `usage` is then their total.",
    )
    urls: JobUrls = Field(description="Links to act on the job.")


class JobEventOut(BaseModel):
    """One transition of a job, as its event log recorded it."""

    object: Literal["job_event"] = Field(default="job_event", description="Always job_event.")
    id: int = Field(description="Orders every event of the gateway (across jobs).")
    job_id: uuid.UUID = Field(description="The job's id.")
    seq: int = Field(description="The event's number in its job's history, from 1, no gaps.")
    type: str = Field(
        description="job.created, job.submitting, job.started, job.processing, job.logs, "
        "job.cancel_requested, job.submit_retrying, job.submit_ambiguous, job.attached, "
        "job.cache_hit, job.fallback, job.split, job.segment_ended, job.segment_retried, "
        "job.succeeded, job.failed, job.canceled, job.aborted"
    )
    data: dict[str, Any] = Field(description="What changed (status, error, logs …).")
    created_at: datetime = Field(description="When the transition was committed.")


class FleetWorker(BaseModel):
    owner: str = Field(description="The worker's name (host and process).")
    started_at: datetime = Field(description="When it started.")
    beat_at: datetime = Field(description="Its last heartbeat.")
    alive: bool = Field(description="Beat within FOLEY_WORKER_STALE_AFTER.")


class FleetStatus(BaseModel):
    status: JobStatus = Field(description="An unfinished status.")
    jobs: int = Field(description="Jobs in it now, across tenants.")
    oldest_age_s: float | None = Field(description="Seconds since the oldest of them was created.")


class FleetOut(BaseModel):
    """What the gateway is doing now: its workers, its unfinished jobs, fal's slots."""

    object: Literal["fleet"] = Field(default="fleet", description="Always fleet.")
    workers: list[FleetWorker] = Field(description="Every worker that beat recently, latest first.")
    workers_alive: int = Field(description="Workers that beat within FOLEY_WORKER_STALE_AFTER.")
    live_jobs: list[FleetStatus] = Field(description="Unfinished jobs by status.")
    finished_last_hour: dict[str, int] = Field(description="Jobs that ended in the last hour.")
    fal_slots_in_use: int = Field(description="Requests at fal not yet reported complete.")
    fal_slots: int = Field(description="fal's concurrency for the account (FOLEY_FAL_CONCURRENCY).")
