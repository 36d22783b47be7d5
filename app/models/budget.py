from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class BudgetPeriod(Base):
    """A tenant's spend and reservations in one budget period. Its row lock is what makes
    reserve-then-check atomic across API processes: concurrent creates queue on it."""

    __tablename__ = "budget_periods"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    spent_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class BudgetEvent(Base):
    """A threshold (50/80/100 % …) crossed in a period; unique, so it is recorded once."""

    __tablename__ = "budget_events"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    threshold_pct: Mapped[int] = mapped_column(Integer, primary_key=True)
    spent_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    budget_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    crossed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class RateLimitWindow(Base):
    """Job creations per tenant and second, counted in Postgres so every API process sees the
    same count; the rate limit sums the last 61 (app.usage.limits)."""

    __tablename__ = "rate_limit_windows"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
