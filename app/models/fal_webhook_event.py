from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Enum, ForeignKey, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UUIDPrimaryKey


class WebhookEventState(enum.StrEnum):
    received = "received"
    processed = "processed"
    unmatched = "unmatched"


class FalWebhookEvent(UUIDPrimaryKey, Base):
    """A verified webhook from fal, stored before it is acknowledged. Unique on fal's request id:
    a duplicate delivery only bumps ``deliveries``."""

    __tablename__ = "fal_webhook_events"

    request_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    gateway_request_id: Mapped[str | None] = mapped_column(String(100))
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    state: Mapped[WebhookEventState] = mapped_column(
        Enum(
            WebhookEventState,
            name="webhook_event_state",
            values_callable=lambda e: [m.value for m in e],
        ),
        nullable=False,
        default=WebhookEventState.received,
    )
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
