from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.models import StoredFile


class FileOut(BaseModel):
    object: Literal["file"] = "file"
    id: uuid.UUID
    kind: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    probe: dict[str, Any] | None = Field(description="What the gateway measured (PyAV).")
    job_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None = Field(description="When retention deletes it, if set.")
    data_removed: bool
    url: str

    @classmethod
    def of(cls, f: StoredFile, base_url: str, expires_at: datetime | None) -> FileOut:
        return cls(
            id=f.id,
            kind=f.kind.value,
            filename=f.filename,
            content_type=f.content_type,
            size_bytes=f.size_bytes,
            sha256=f.sha256,
            probe=f.media,
            job_id=f.job_id,
            created_at=f.created_at,
            expires_at=expires_at,
            data_removed=f.deleted_at is not None,
            url=f"{base_url.rstrip('/')}/v1/files/{f.id}",
        )
