from __future__ import annotations

from datetime import datetime

from sqlalchemy import ARRAY, BigInteger, DateTime, Integer, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Timestamps, UUIDPrimaryKey

DEFAULT_THRESHOLDS = [50, 80, 100]


class Tenant(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    # Budget: NULL means none. The period is "month" (calendar month, UTC) or a duration in
    # seconds counted from budget_anchor.
    budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    budget_period: Mapped[str] = mapped_column(
        String(32), nullable=False, default="month", server_default="month"
    )
    budget_anchor: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    budget_thresholds: Mapped[list[int]] = mapped_column(
        ARRAY(Integer),
        nullable=False,
        default=lambda: list(DEFAULT_THRESHOLDS),
        server_default=text("'{50,80,100}'"),
    )
    # Limits: NULL means the gateway-wide default.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(
        Numeric(8, 3), nullable=False, default=1, server_default=text("1")
    )
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The tenant's jobs use the result cache unless a request says "cache": false.
    cache_default: Mapped[bool] = mapped_column(
        nullable=False, default=False, server_default=text("false")
    )
