"""What the lifecycle answers: a transition (what to write), and what decisions read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from app.models.job import JobStatus, SubmitState
from app.usage.billing import Outcome

MAX_LOG_LINES = 100
MAX_PREFLIGHT_TRIES = 3


class Wake(StrEnum):
    """Why a transition wakes the workers (its NOTIFY's payload): what may have become due, so
    a worker claims only there (app.worker.runner)."""

    QUEUED = "job"  # a job to send: accepted, or queued again (a fallback, a segment to retry)
    FINISHED = "job_finished"  # a job ended: its place at fal, and its tenant's, are free
    COMPLETED = (
        "completed"  # fal finished its run (stream, poll): the result is due, the place free
    )
    REPORTED = "webhook"  # fal's webhook, or its request found: due now, its place maybe free
    CANCEL = "cancel"  # a cancel to send
    SEGMENT_ENDED = "segment"  # a segment ended: the job it is part of is due


class JobLike(Protocol):
    """What decisions read of a job (the ORM row satisfies it; tests use a plain dataclass)."""

    status: JobStatus
    submit_state: SubmitState
    submit_attempts: int
    poll_count: int
    upstream_request_id: str | None
    upstream_completed: bool
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    cancel_requested_at: datetime | None
    cancel_sent_at: datetime | None
    cancel_after_at: datetime | None
    inference_s: float | None
    queue_position: int | None
    logs: list[dict[str, Any]]
    model: str
    endpoint: str
    # The models a job may run on, in order ({model, endpoint, upstream_payload}; None: one
    # model), and the attempts it left behind (app.jobs.lifecycle.fallback).
    candidates: list[dict[str, Any]] | None
    attempts: list[dict[str, Any]]


@dataclass(frozen=True)
class Policy:
    """The settings decisions depend on (app.config.Settings, reduced)."""

    poll_min: timedelta = timedelta(seconds=1)
    poll_max: timedelta = timedelta(seconds=30)
    # after a submit nobody follows on its status stream, before any news
    first_look: timedelta = timedelta(seconds=1)
    ambiguous_grace: timedelta = timedelta(seconds=120)
    # When to ask fal's platform API about an ambiguous submit (None: no API to ask; only a
    # webhook can tell, until the grace runs out).
    ambiguous_lookup: timedelta | None = None
    retry_ambiguous: bool = False  # AmbiguousSubmitPolicy.retry
    max_attempts: int = 3  # models one job may run on (FOLEY_FALLBACK_MAX_ATTEMPTS)

    def backoff(self, n: int) -> timedelta:
        lo = self.poll_min.total_seconds()
        hi = self.poll_max.total_seconds()
        return timedelta(seconds=min(hi, lo * (1.5 ** max(0, n - 1))))


class Keep:
    """``next_action_at`` stays as it is (a write made without the job's lease)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep()


@dataclass(frozen=True)
class Settle:
    """Settle the job's usage and release its budget reservation; ``outcome`` None when no
    request reached fal."""

    outcome: Outcome | None


@dataclass(frozen=True)
class SettleRequest:
    """Settle one fal request of the job now (an attempt it falls back from), keeping the job's
    reservation for the model it moves on to."""

    request_id: str
    outcome: Outcome


@dataclass(frozen=True)
class Transition:
    changes: dict[str, Any] = field(default_factory=dict)  # column → new value
    next_action_at: datetime | Keep | None = KEEP
    events: tuple[tuple[str, dict[str, Any]], ...] = ()  # (type, data) for the job's event log
    settle: Settle | None = None
    settle_request: SettleRequest | None = None
    record_request: str | None = None  # put this fal request on the usage ledger
    reprice_micros: int | None = None  # re-price the budget reservation (may refuse)
    wake: Wake | None = None  # other workers have something to do now

    @property
    def noop(self) -> bool:
        return (
            not (self.changes or self.events or self.settle or self.settle_request)
            and self.next_action_at is KEEP
        )


NOTHING = Transition()


class NotApplicable(Exception):
    """The event does not apply to the job as it stands (e.g. canceling a finished job)."""
