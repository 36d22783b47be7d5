from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class UsageStatus(enum.StrEnum):
    estimated = "estimated"  # the request exists at fal; its cost is not known yet
    settled = "settled"  # priced and final
    unpriced = "unpriced"  # finished, but no price was in force: blocks settlement, alerts


class UsageRecord(Base):
    """One row per billable upstream request: unique on fal's request id, so duplicate webhooks,
    retries and crashed workers can never record a request twice. A result-cache hit is a row
    with no request (``upstream_request_id`` NULL, model ``cache_hit``), one per job."""

    __tablename__ = "usage_records"
    # A tenant's requests in order, as the CSV export reads them (its ORDER BY created_at, id):
    # the export streams from the index without sorting.
    __table_args__ = (
        Index("ix_usage_records_tenant_created", "tenant_id", "created_at", "id"),
        Index(
            "uq_usage_records_cache_hit_job",
            "job_id",
            unique=True,
            postgresql_where=text("upstream_request_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    upstream_request_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(200), nullable=False)
    unit: Mapped[str] = mapped_column(String(32), nullable=False)
    units: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    unit_price_micros: Mapped[int | None] = mapped_column(BigInteger)
    price_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("prices.id", ondelete="RESTRICT")
    )
    estimated_cost_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # What fal billed: exactly, in nano-dollars (fal's precision), and rounded half-up to the
    # micro-dollar for this one request (budgets, per-request amounts at the API).
    cost_nanos: Mapped[int | None] = mapped_column(BigInteger)
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[UsageStatus] = mapped_column(
        Enum(UsageStatus, name="usage_status", values_callable=lambda e: [m.value for m in e]),
        nullable=False,
    )
    outcome: Mapped[str | None] = mapped_column(String(40))  # succeeded, upstream_422, 5xx, …
    flagged: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    orphan: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    job_status: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UsageDaily(Base):
    """Per tenant × model × day × final job status: kept in the settlement's own transaction, so
    it always equals the sum of the settled ledger (rebuildable from it, see usage.service)."""

    __tablename__ = "usage_daily"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    job_status: Mapped[str] = mapped_column(String(20), primary_key=True)
    unit: Mapped[str] = mapped_column(String(32), nullable=False)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    units: Mapped[Decimal] = mapped_column(Numeric(20, 6), nullable=False, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # The exact sum (nano-dollars): a total is rounded once, from this (docs/money.md).
    cost_nanos: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
