from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class JobEvent(Base):
    """One transition of a job, appended in the transaction that made it (app.jobs.store).

    The log is the job's history (``GET /v1/jobs/{id}/events``) and the outbox notifications read:
    an event exists if and only if its transition committed. ``seq`` numbers a job's events from
    1 without gaps (taken from ``jobs.event_seq`` under the job's row lock); ``id`` orders all
    events, for readers that follow every job at once. Kept as long as its job.

    Partitioned by month of ``job_created_at``, the job's own creation time (migration 0011,
    docs/scaling.md): a job's events share one partition, so ``(job_id, seq, job_created_at)``
    is as unique as ``(job_id, seq)`` and a read that names the job's creation time touches
    one partition. Partitions are made ahead by the workers' housekeeping."""

    __tablename__ = "job_events"
    __table_args__ = (
        # A job's history and "its events after N" (SSE resumption by Last-Event-ID).
        # (job_created_at: a unique index must hold the partition key; one value per job)
        Index("ix_job_events_job_seq", "job_id", "seq", "job_created_at", unique=True),
        # No index by tenant: notifications take events by trigger, in their transaction
        # (migration 0020).
        {"postgresql_partition_by": "RANGE (job_created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    # The job's created_at: the partition key, part of the primary key as it must be.
    job_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
