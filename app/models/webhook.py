"""Outbound webhooks (app.notifications): where tenants want to be told, what is owed to them,
and every attempt to tell them. The incoming webhooks from fal are app.models.fal_webhook_event.

All four tables belong to app.notifications; the outbox is filled by triggers on ``job_events``
and ``budget_events`` (migration 0009), in the transaction that appends the event.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Timestamps, UUIDPrimaryKey


class WebhookEndpoint(UUIDPrimaryKey, Timestamps, Base):
    """A tenant's URL subscribed to events. ``secret`` signs every delivery; after a rotation
    ``previous_secret`` signs too until ``previous_expires_at`` (both signatures are sent)."""

    __tablename__ = "webhook_endpoints"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    )
    url: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(String(500))
    # None: every event type (new ones included); else only these.
    events: Mapped[list[str] | None] = mapped_column(ARRAY(String(60)))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(String(200), nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(String(200))
    previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Since when every attempt has failed (None: the last one succeeded); past
    # FOLEY_WEBHOOK_DISABLE_AFTER the endpoint is disabled.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookSigningKey(Timestamps, Base):
    """A tenant's default secret: it signs per-job webhooks (``"webhook"`` on a job)."""

    __tablename__ = "webhook_signing_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(200), nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(String(200))
    previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # due at next_attempt_at (or being attempted, under a lease)
    succeeded = "succeeded"
    failed = "failed"  # the schedule ran out, the receiver answered 410, or the URL is refused


class WebhookDelivery(UUIDPrimaryKey, Base):
    """One message owed to one receiver: an endpoint, or a job's own ``webhook`` URL.

    ``message_id`` is the ``webhook-id`` header, the same on every attempt (the receiver's dedupe
    key) and shared by the endpoints the same event goes to; ``body`` is fixed when the delivery
    is made, so every attempt signs the same bytes. Claimed by the workers' senders with a lease
    (``FOR UPDATE SKIP LOCKED``): a sender that dies mid-attempt loses nothing, the delivery is
    attempted again when its lease expires."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The senders' claim: the receivers with pending work, and each one's due deliveries.
        Index(
            "ix_webhook_deliveries_lane",
            "target",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # The deliveries in flight, per receiver (its cap).
        Index(
            "ix_webhook_deliveries_leased",
            "target",
            postgresql_where=text("status = 'pending' AND lease_owner IS NOT NULL"),
        ),
        # When the next delivery is due (the senders' wait).
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # An endpoint's deliveries, newest first (the API's list).
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
        # A job's latest job.logs delivery to a receiver (logs are sent at most every 500 ms).
        Index(
            "ix_webhook_deliveries_job_logs",
            "job_id",
            "target",
            "created_at",
            postgresql_where=text("type = 'job.logs'"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    )
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # A job's own webhook URL (endpoint_id is None); an endpoint's URL is read at each attempt.
    url: Mapped[str | None] = mapped_column(Text)
    # Who receives it, for the per-receiver concurrency cap: the endpoint's id, or the origin of
    # a job's webhook URL.
    target: Mapped[str] = mapped_column(Text, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    message_id: Mapped[str] = mapped_column(String(60), nullable=False)
    type: Mapped[str] = mapped_column(String(60), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(
            DeliveryStatus,
            name="webhook_delivery_status",
            values_callable=lambda e: [m.value for m in e],
        ),
        nullable=False,
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The retry schedule's index for the attempt after the next (FOLEY_WEBHOOK_RETRY_SCHEDULE).
    schedule_pos: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    """One attempt of a delivery, whatever came of it (kept as long as its delivery)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)


class NotificationOutbox(Base):
    """An event owed to the fan-out: a deliverable job event or a budget threshold crossed.

    Written only by triggers on ``job_events`` and ``budget_events`` (migration 0009), inside
    the transaction that appends the event, so a row exists if and only if its event committed;
    the fan-out (app.notifications.fanout) takes rows with ``DELETE … SKIP LOCKED`` and makes
    the deliveries in the same transaction. A cursor over ``job_events.id`` could not do this:
    identity values are taken before commit, so a smaller id can commit after a larger one was
    read."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    type: Mapped[str] = mapped_column(String(60), nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    job_event_seq: Mapped[int | None] = mapped_column(Integer)
    budget_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    threshold_pct: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
