"""Files the gateway keeps for a tenant: uploads (inputs) and job outputs.

Uploads are streamed into storage with a size cap (never whole in memory), hashed on the way,
then probed with PyAV: the stored content type comes from the real container, not from what
the client said, and something that is neither a readable video nor a readable audio file (a
model's reference clip) is refused and deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import ModelSpec
from app.db.driver import driver_of
from app.kit.problems import Gone, NotFound, ProblemError, Unprocessable
from app.media.errors import MediaError
from app.media.probe import MediaInfo, probe
from app.models import FileKind, StoredFile
from app.storage import ObjectTooLargeError, Storage

VIDEO_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
    "avi": "video/x-msvideo",
    "3gp": "video/3gpp",
}
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "mp4": "audio/mp4",
    "matroska": "audio/x-matroska",
    "webm": "audio/webm",
}


class FileNotFound(NotFound):
    code = "file_not_found"


class FileRemoved(Gone):
    code = "file_removed"


class UploadTooLarge(ProblemError):
    status = 413
    code = "upload_too_large"


class VideoUnreadable(Unprocessable):
    code = "video_unreadable"


async def get_file(session: AsyncSession, tenant_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile:
    stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id, StoredFile.id == file_id)
    file = (await session.scalars(stmt)).first()
    if file is None:
        raise FileNotFound(f"No file {file_id}.", param="file_id")
    return file


async def named_audio_uploads(
    session: AsyncSession, tenant_id: uuid.UUID, spec: ModelSpec, job_input: Mapping[str, Any]
) -> dict[str, StoredFile]:
    """The tenant's uploads a job's audio inputs name, by their normalized field
    (FileNotFound for one that is not the tenant's)."""
    found = {}
    for audio in spec.audio_inputs:
        value = job_input.get(audio.file_param)
        if value:
            found[audio.file_param] = await get_file(session, tenant_id, uuid.UUID(str(value)))
    return found


def ensure_present(file: StoredFile) -> None:
    if file.deleted_at is not None:
        raise FileRemoved(
            f"File {file.id} was deleted on {file.deleted_at:%Y-%m-%d} by the retention policy.",
            param="file_id",
        )


@contextlib.asynccontextmanager
async def local_copy(storage: Storage, key: str, tmp_dir: Path) -> AsyncIterator[Path]:
    """A path PyAV can open: the object itself for local storage, else a temporary download."""
    path = storage.local_path(key)
    if path is not None and path.exists():
        yield path
        return
    workdir = Path(tempfile.mkdtemp(prefix="copy-", dir=tmp_dir))
    try:
        target = workdir / "object"
        with target.open("wb") as out:
            async for chunk in await storage.open_range(key):
                await asyncio.to_thread(out.write, chunk)
        yield target
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def store_upload(
    session: AsyncSession,
    storage: Storage,
    *,
    tenant_id: uuid.UUID,
    chunks: AsyncIterable[bytes],
    filename: str | None,
    max_bytes: int,
    tmp_dir: Path,
) -> StoredFile:
    file_id = uuid.uuid4()
    key = f"uploads/{tenant_id}/{file_id}"
    try:
        obj = await storage.put_stream(
            key, chunks, content_type="application/octet-stream", max_bytes=max_bytes
        )
    except ObjectTooLargeError as exc:
        raise UploadTooLarge(
            f"Uploads are limited to {max_bytes} bytes.", extra={"max_bytes": max_bytes}
        ) from exc
    try:
        async with local_copy(storage, key, tmp_dir) as path:
            media: MediaInfo = await asyncio.to_thread(probe, path)
        if media.video is None and media.audio is None:
            raise MediaError("no video or audio stream")
    except (MediaError, ValueError) as exc:
        await storage.delete(key)
        raise VideoUnreadable(
            f"The upload is not a readable video (nor audio): {exc}", param="file"
        ) from exc
    # The type comes from the real container; the row's type is what downloads are served as.
    types = VIDEO_TYPES if media.video is not None else AUDIO_TYPES
    content_type = types.get(media.container, "application/octet-stream")
    file = StoredFile(
        id=file_id,
        tenant_id=tenant_id,
        job_id=None,
        kind=FileKind.input_upload,
        storage_key=key,
        filename=_safe_name(filename) or f"upload.{media.container}",
        content_type=content_type,
        size_bytes=obj.size_bytes,
        sha256=obj.sha256,
        media=media.to_dict(),
    )
    session.add(file)
    await session.flush()
    await session.refresh(file)
    return file


def _safe_name(name: str | None) -> str | None:
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    cleaned = "".join(c for c in base if c.isprintable() and c not in '"<>|:*?')[:200]
    return cleaned or None


def expires_at(file: StoredFile, retention_days: float | None) -> datetime | None:
    if retention_days is None:
        return None
    return file.created_at + timedelta(days=retention_days)


# --- signed, expiring gateway URLs (how fal can fetch an upload without our API key) ----------


def sign_file_url(secret: bytes, base_url: str, file_id: uuid.UUID, ttl: timedelta) -> str:
    expires = int(time.time() + ttl.total_seconds())
    sig = _signature(secret, file_id, expires)
    return f"{base_url.rstrip('/')}/v1/files/{file_id}/signed?expires={expires}&sig={sig}"


def verify_file_signature(secret: bytes, file_id: uuid.UUID, expires: int, sig: str) -> bool:
    if expires < time.time():
        return False
    return hmac.compare_digest(_signature(secret, file_id, expires), sig)


def _signature(secret: bytes, file_id: uuid.UUID, expires: int) -> str:
    return hmac.new(secret, f"file:{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()


async def get_any_file(session: AsyncSession, file_id: uuid.UUID) -> StoredFile | None:
    return await session.get(StoredFile, file_id)


@dataclass(frozen=True)
class Output:
    """A job's output as stored: the row to record."""

    id: uuid.UUID
    kind: FileKind
    storage_key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    media: dict[str, Any]
    source_url: str | None


async def replace_job_outputs(
    executor: AsyncSession | asyncpg.Connection,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    outputs: list[Output],
) -> None:
    """Record a job's outputs, in the transaction that makes the job succeed (a session's, or
    the raw connection of the jobs store's transition). A repeated finalize (after a crash)
    replaces the rows of the one before."""
    conn = await driver_of(executor)
    await conn.execute(
        _REPLACE_OUTPUTS,
        tenant_id,
        job_id,
        [out.id for out in outputs],
        [out.kind.value for out in outputs],
        [out.storage_key for out in outputs],
        [out.filename for out in outputs],
        [out.content_type for out in outputs],
        [out.size_bytes for out in outputs],
        [out.sha256 for out in outputs],
        [None if out.media is None else json.dumps(out.media) for out in outputs],
        [out.source_url for out in outputs],
    )


# The rows of the finalize before (if any) deleted, and these inserted, in one statement.
_REPLACE_OUTPUTS = """
    WITH gone AS (DELETE FROM files WHERE job_id = $2)
    INSERT INTO files (id, tenant_id, job_id, kind, storage_key, filename, content_type,
        size_bytes, sha256, media, source_url)
    SELECT f.id, $1, $2, f.kind::file_kind, f.storage_key, f.filename, f.content_type,
        f.size_bytes, f.sha256, f.media::jsonb, f.source_url
    FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
        $9::text[], $10::text[], $11::text[])
        AS f(id, kind, storage_key, filename, content_type, size_bytes, sha256, media, source_url)
"""


async def planned_shares(
    session: AsyncSession, source_job_id: uuid.UUID
) -> dict[uuid.UUID, uuid.UUID] | None:
    """For a result-cache hit: a new id for each of the source job's output rows (old → new),
    the rows share-locked (retention skips them until the hit commits). None when any of them
    is gone (deleted by retention), or there are none: no hit then."""
    rows = (
        await session.scalars(
            select(StoredFile).where(StoredFile.job_id == source_job_id).with_for_update(read=True)
        )
    ).all()
    if not rows or any(f.deleted_at is not None for f in rows):
        return None
    return {f.id: uuid.uuid4() for f in rows}


async def share_job_outputs(
    session: AsyncSession,
    *,
    source_job_id: uuid.UUID,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    new_ids: dict[uuid.UUID, uuid.UUID],
) -> bool:
    """Record a cache hit's outputs, in the transaction that makes the job succeed: rows of its
    own (its tenant's, its ids) pointing at the source's storage objects. Nothing is copied: a
    hit costs no storage and no time, and retention deletes an object only once no present row
    uses it (app.files.retention). False (nothing written) when a source row is gone."""
    rows = (
        await session.scalars(
            select(StoredFile)
            .where(
                StoredFile.job_id == source_job_id,
                StoredFile.id.in_(list(new_ids)),
                StoredFile.deleted_at.is_(None),
            )
            .with_for_update(read=True)
        )
    ).all()
    if len(rows) != len(new_ids):
        return False
    await session.execute(delete(StoredFile).where(StoredFile.job_id == job_id))
    for f in rows:
        session.add(
            StoredFile(
                id=new_ids[f.id],
                tenant_id=tenant_id,
                job_id=job_id,
                kind=f.kind,
                storage_key=f.storage_key,
                filename=f.filename,
                content_type=f.content_type,
                size_bytes=f.size_bytes,
                sha256=f.sha256,
                media=f.media,
                source_url=f.source_url,
            )
        )
    await session.flush()
    return True
