from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class WorkerBeat(Base):
    """A running worker's heartbeat (app.jobs.store.liveness): how a claim tells a lease whose
    owner died from one whose owner is busy."""

    __tablename__ = "worker_beats"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
