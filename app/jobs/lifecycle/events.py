"""What can happen to a job: the events the steps, the API and the status stream report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.upstream.schemas import ResultCancelled, ResultFailed, ResultNotFound


@dataclass(frozen=True)
class CancelRequested:
    """The tenant asked to cancel."""


@dataclass(frozen=True)
class DeadlinePassed:
    """The job's Cancel-After deadline passed: abort it if it never left the gateway, else
    cancel it at fal (it ends aborted if fal never ran it)."""


@dataclass(frozen=True)
class TimedOut:
    """The job outlived ``FOLEY_JOB_TIMEOUT`` (a cancel was sent to fal if it was there)."""

    limit: timedelta


@dataclass(frozen=True)
class InputRejected:
    """The preflight measured the input and it breaks the model's limits: fail, pay nothing."""

    code: str
    message: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class InputUnavailable:
    """The input could not be fetched this time."""

    message: str


@dataclass(frozen=True)
class SubmitStarting:
    """The request is about to leave ('sending' must be durable first). Carries what the
    preflight measured, when it ran in this step."""

    probe: dict[str, Any] | None = None
    upstream_payload: dict[str, Any] | None = None
    estimated_cost_micros: int | None = None
    cache_key: str | None = None  # a cache miss: kept, so that its success can answer others


@dataclass(frozen=True)
class CacheHit:
    """A stored success answers this job (app.jobs.cache): its result is reused, nothing is sent
    upstream. Only for a job that never left the gateway; the hit is billed at the cache's own
    price. ``result`` names the job's own file rows (pointing at the source's objects)."""

    source_job: uuid.UUID
    result: dict[str, Any]
    cache_key: str
    probe: dict[str, Any] | None = None


@dataclass(frozen=True)
class BudgetRefused:
    """Re-priced by the measured input, the job no longer fits its tenant's budget."""

    code: str
    message: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submitted:
    request_id: str
    status_url: str | None
    response_url: str | None
    cancel_url: str | None
    queue_position: int | None
    watched: bool = False  # its status stream will be followed: a poll is only a safety net


@dataclass(frozen=True)
class SubmitAmbiguous:
    """The request may or may not have reached fal (no answer came back)."""

    reason: str


@dataclass(frozen=True)
class SubmitFailed:
    """Certainly nothing was created at fal (refused before it reached the queue): retry."""

    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True)
class SubmitRefused:
    """fal refused the request for good."""

    code: str
    message: str
    upstream: dict[str, Any] | None
    created: bool  # fal gave it a request id: it exists there


@dataclass(frozen=True)
class FoundMidSend:
    """A worker died between 'sending' and learning the answer."""


@dataclass(frozen=True)
class AmbiguousDue:
    """An ambiguous job came due: wait out the grace, then retry (policy) or give up."""


@dataclass(frozen=True)
class Attached:
    """A request we had no id for turned out to be this job's (its submit answer was lost): its
    webhook named the job (signed job token; ``completed``: fal ran it and it has ended), or
    fal's platform API listed it. Its URLs are fal's rule's."""

    request_id: str
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None
    completed: bool = True
    found_by: str = "webhook"  # or "platform"


@dataclass(frozen=True)
class NeverReceived:
    """fal's platform API shows no request for this job's ambiguous submit: fal never received
    it, and sending it is not a second paid request."""


@dataclass(frozen=True)
class Progress:
    """fal's status, not yet COMPLETED (polled, or seen on the status stream)."""

    in_progress: bool
    queue_position: int | None
    logs: list[dict[str, Any]] | None
    polled: bool  # by a step holding the lease (which then schedules the next poll)
    watched: bool = False  # the status stream follows the job: the poll is only a safety net


@dataclass(frozen=True)
class UpstreamCompleted:
    """fal says COMPLETED (seen on the status stream): the result is ready to be read."""

    inference_s: float | None
    logs: list[dict[str, Any]] | None


@dataclass(frozen=True)
class CompletionReported:
    """fal's webhook says the request ended (how, the step reads from the stored webhook)."""


@dataclass(frozen=True)
class Succeeded:
    """The outputs are fetched, measured and stored."""

    result: dict[str, Any]
    output: dict[str, Any]
    inference_s: float | None
    logs: list[dict[str, Any]] | None


@dataclass(frozen=True)
class OutputsUnavailable:
    """fal ran it (and bills it), but its outputs could not be fetched or read."""

    code: str
    message: str
    output: dict[str, Any]
    inference_s: float | None


@dataclass(frozen=True)
class Ended:
    """fal's final answer was not a success: a failure, a cancel, or a result that expired."""

    outcome: ResultFailed | ResultCancelled | ResultNotFound
    inference_s: float | None
    logs: list[dict[str, Any]] | None


@dataclass(frozen=True)
class CancelSent:
    """The cancel went to fal; ``not_found``: fal had no such request (dropped while queued)."""

    not_found: bool


@dataclass(frozen=True)
class RetryLater:
    """A transient failure (a poll, a fetch, a cancel, a crashed step): look again later."""

    reason: str


@dataclass(frozen=True)
class Reschedule:
    """Nothing changed; look again at ``at`` (or now)."""

    at: datetime | None = None


@dataclass(frozen=True)
class Split:
    """The video is longer than the model takes: the job runs as segments, each a job of its own
    (inserted with this transition, each holding its share of the reservation). The job never
    goes to fal itself."""

    segments: tuple[dict[str, Any], ...]  # {index, start_s, end_s}, in order
    probe: dict[str, Any]
    estimated_cost_micros: int
    original_file_id: uuid.UUID | None = None  # a URL input, stored for the final mux


@dataclass(frozen=True)
class SegmentRetried:
    """Segments failed at fal for a reason that was not the input's, and fal did not bill them:
    each runs again, once (new jobs for the same segments, inserted with this transition)."""

    retries: tuple[dict[str, Any], ...]  # {index, failed_job, error}


@dataclass(frozen=True)
class SegmentsAssembled:
    """Every segment succeeded and their sound is stitched onto the video: the job succeeded.
    Its cost is its segments' (each settled when it ended)."""

    result: dict[str, Any]


@dataclass(frozen=True)
class SegmentsEnded:
    """The segments ended without a whole result (one failed for good, the job was canceled or
    timed out): the job ends ``status`` with ``error``; what fal ran was billed on each."""

    status: str  # failed | canceled
    error: dict[str, Any]


Event = (
    CancelRequested
    | DeadlinePassed
    | TimedOut
    | InputRejected
    | InputUnavailable
    | SubmitStarting
    | CacheHit
    | BudgetRefused
    | Submitted
    | SubmitAmbiguous
    | SubmitFailed
    | SubmitRefused
    | FoundMidSend
    | AmbiguousDue
    | Attached
    | NeverReceived
    | Progress
    | UpstreamCompleted
    | CompletionReported
    | Succeeded
    | OutputsUnavailable
    | Ended
    | CancelSent
    | RetryLater
    | Reschedule
    | Split
    | SegmentRetried
    | SegmentsAssembled
    | SegmentsEnded
)
