from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Timestamps, UUIDPrimaryKey


class JobStatus(enum.StrEnum):
    """The public life cycle (Replicate's words): queued here → starting (IN_QUEUE at fal) →
    processing (IN_PROGRESS) → succeeded | failed | canceled, or aborted (its Cancel-After
    deadline passed before it started running: it cost nothing)."""

    queued = "queued"
    starting = "starting"
    processing = "processing"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    aborted = "aborted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.aborted}
)


class SubmitState(enum.StrEnum):
    """Where the upstream submit stands. ``sending`` is written (and committed) before the HTTP
    call: a worker that finds it after a crash knows the request may exist at fal."""

    pending = "pending"
    sending = "sending"
    submitted = "submitted"
    ambiguous = "ambiguous"
    # A video longer than its model takes: the job's requests are its segments' (child jobs,
    # app.jobs.steps.split); the job itself never goes to fal.
    split = "split"


class Job(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The worker's claim scan: live jobs whose next action is due.
        Index(
            "ix_jobs_due",
            "next_action_at",
            postgresql_where=text("status IN ('queued', 'starting', 'processing')"),
        ),
        # Keyset pagination of a tenant's jobs, newest first.
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        # The same filtered by status or model (`?status=`, `?model=`): a page of a rare one is
        # read directly instead of walking the tenant's history (migration 0011,
        # docs/scaling.md).
        Index("ix_jobs_tenant_status_created", "tenant_id", "status", "created_at", "id"),
        Index("ix_jobs_tenant_model_created", "tenant_id", "model", "created_at", "id"),
        # The result cache's lookup: a success that ran upstream, by its key, newest first.
        Index(
            "ix_jobs_cache_source",
            "cache_key",
            "completed_at",
            postgresql_where=text(
                "status = 'succeeded' AND cache_key IS NOT NULL AND cache_source_id IS NULL"
            ),
        ),
        # A split job's segments (migration 0018).
        Index("ix_jobs_parent_id", "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
        # fal's request id, unique where there is one: no entry for a job not yet at fal
        # (migration 0019).
        Index(
            "uq_jobs_upstream_request_id",
            "upstream_request_id",
            unique=True,
            postgresql_where=text("upstream_request_id IS NOT NULL"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", values_callable=lambda e: [m.value for m in e]),
        nullable=False,
        default=JobStatus.queued,
    )
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    upstream_payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    logs: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    upstream_output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The input as the gateway measured it before paying for anything (preflight).
    input_probe: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # What the caller asked of the finished sound (app.jobs.schemas.OutputOptions); None: the
    # model's outputs as they came.
    output_options: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # The models the job may run on, in order, each {model, endpoint, upstream_payload} (None:
    # the one model it names), and the attempts it left behind (app.jobs.lifecycle.fallback).
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB(none_as_null=True))
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb")
    )
    input_file_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("files.id", ondelete="SET NULL", use_alter=True)
    )
    data_removed: Mapped[bool] = mapped_column(
        nullable=False, default=False, server_default=text("false")
    )
    inference_s: Mapped[float | None]

    # upstream bookkeeping
    submit_state: Mapped[SubmitState] = mapped_column(
        Enum(SubmitState, name="submit_state", values_callable=lambda e: [m.value for m in e]),
        nullable=False,
        default=SubmitState.pending,
    )
    submit_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    upstream_request_id: Mapped[str | None] = mapped_column(String(100))
    status_url: Mapped[str | None] = mapped_column(Text)
    response_url: Mapped[str | None] = mapped_column(Text)
    cancel_url: Mapped[str | None] = mapped_column(Text)
    queue_position: Mapped[int | None] = mapped_column(Integer)
    upstream_completed: Mapped[bool] = mapped_column(nullable=False, default=False)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Cancel-After: when the job is canceled (aborted if it has not started running by then).
    cancel_after_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The W3C traceparent of the accepting request (only when traces are exported): the
    # worker's steps continue that trace (app.telemetry.tracing).
    traceparent: Mapped[str | None] = mapped_column(String(100))

    # worker bookkeeping: when the job next needs a worker, and who holds it
    next_action_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    poll_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The seq of the job's last event (app.models.job_event): the next one takes event_seq + 1.
    event_seq: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )

    # money: the estimate reserved against the tenant's budget period at creation (0 if none)
    estimated_cost_micros: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default=text("0")
    )
    reserved_micros: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default=text("0")
    )
    budget_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    usage_settled: Mapped[bool] = mapped_column(
        nullable=False, default=False, server_default=text("false")
    )

    # The job's own webhook (``"webhook"`` at creation) and the event types it asked for
    # (app.notifications.events maps ``webhook_events_filter`` to them).
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str] | None] = mapped_column(ARRAY(String(60)))

    # The result cache (app.jobs.cache): asked for (per request or the tenant's default); the
    # key once the input's content is known; the job whose result a hit reused.
    cache_requested: Mapped[bool] = mapped_column(
        nullable=False, default=False, server_default=text("false")
    )
    cache_key: Mapped[str | None] = mapped_column(String(64))
    cache_source_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # A segment of a longer video: the job it is part of, and where it lies ({index, start_s,
    # end_s, try}); hidden from lists, shown in its parent's ``segments``.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE", name="fk_jobs_parent_id")
    )
    segment: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))

    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
