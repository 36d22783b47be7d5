from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.models import StoredFile


class FileOut(BaseModel):
    object: Literal["file"] = Field(default="file", description="Always file.")
    id: uuid.UUID = Field(description="The file's id (a job's input.video_file_id).")
    kind: str = Field(description="input_upload, or a job's output.")
    filename: str = Field(description="Its name, for downloads.")
    content_type: str = Field(description="Its media type, as sniffed.")
    size_bytes: int = Field(description="Its size in bytes.")
    sha256: str = Field(description="The SHA-256 of its bytes, hex.")
    probe: dict[str, Any] | None = Field(description="What the gateway measured (PyAV).")
    job_id: uuid.UUID | None = Field(description="The job it came from, for an output.")
    created_at: datetime = Field(description="When it was stored.")
    expires_at: datetime | None = Field(description="When retention deletes it, if set.")
    data_removed: bool = Field(description="Deleted by the retention policy.")
    url: str = Field(description="Where to download it.")

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
