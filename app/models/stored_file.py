from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, String
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Timestamps, UUIDPrimaryKey


class FileKind(enum.StrEnum):
    input_upload = "input_upload"
    output_video = "output_video"
    output_audio = "output_audio"


class StoredFile(UUIDPrimaryKey, Timestamps, Base):
    """A file the gateway keeps on a tenant's behalf (job outputs, later uploads)."""

    __tablename__ = "files"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[FileKind] = mapped_column(
        Enum(FileKind, name="file_kind", values_callable=lambda e: [m.value for m in e])
    )
    # Not unique: a result-cache hit's rows point at its source's objects (retention deletes an
    # object only once no present row uses it: app.files.retention).
    storage_key: Mapped[str] = mapped_column(String(500), nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    media: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    source_url: Mapped[str | None] = mapped_column(String(2000))
    # Retention: the bytes are gone (the row stays, so the job still says what there was).
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
