"""Preflight: look at the input before paying for anything.

The worker fetches the input (through the SSRF-safe fetcher, size- and time-capped), probes it
with PyAV (the real container, not the extension; duration; streams), checks it against the
model's limits, and only then lets the submit happen. A violation fails the job at once with a
stable code and the measured value, and no upstream request is made. The probe is kept on the
job and its duration re-prices the budget reservation (ThinkSound bills by compute time).

Uploads were probed when they were uploaded; for them this step also hands the file to fal:
through fal's CDN upload flow, or as a signed, expiring gateway URL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from app.catalog.registry import ModelSpec
from app.config import Settings
from app.files import service as files_service
from app.files.outbound import outbound_policy
from app.media.errors import MediaError
from app.media.probe import MediaInfo, probe
from app.models import StoredFile
from app.netguard import ContentTooLarge, FetchError, OutboundRefused, SafeFetcher, UrlRefused
from app.storage import Storage
from app.upstream.fal import FalClient

VIDEO_CONTAINERS = {"mp4": "video/mp4", "mov": "video/quicktime"}

# Inputs up to this size are fetched and probed in memory: no temporary file, whose creation,
# writes, rename and removal were most of a small input's preflight. Bounded so the inputs of
# every step a worker runs at once stay modest in memory (16 steps: 64 MiB at most).
IN_MEMORY_MAX = 4 * 1024 * 1024
# Inputs up to this size are probed on the event loop: FFmpeg reads their headers in about a
# millisecond (2 ms for a 720p clip), while the trip to a thread and back, competing for the GIL
# with a busy worker, cost as much again. Larger ones go to a thread.
PROBE_INLINE_MAX = 256 * 1024


class InputRejected(Exception):
    """The input breaks a limit or cannot be read: the job fails, nothing goes upstream."""

    def __init__(self, code: str, message: str, **measured: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.measured = measured


class InputUnavailable(Exception):
    """A transient failure fetching the input (5xx, timeout): try again later."""


@dataclass(frozen=True)
class Checked:
    probe: dict[str, Any]
    duration_s: float | None
    video_url: str | None  # set when the upstream needs a new URL (uploads)
    # The input's content hash (the result cache's key): the fetcher's, computed as it read.
    sha256: str | None = None


def check_limits(spec: ModelSpec, media: MediaInfo, size: int, settings: Settings) -> None:
    limits = spec.limits
    if media.video is None:
        raise InputRejected("video_unreadable", "The input has no video stream.")
    if limits.containers and media.container not in limits.containers:
        raise InputRejected(
            "unsupported_container",
            f"{spec.id} accepts {', '.join(sorted(limits.containers))}; the input is "
            f"{media.container} (by its content, whatever its name says).",
            container=media.container,
        )
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise InputRejected(
            "video_too_large",
            f"The input is {size} bytes; the limit is {limits.max_bytes}.",
            size_bytes=size,
            max_bytes=limits.max_bytes,
        )
    duration = media.duration_s
    if duration is None:
        raise InputRejected("video_unreadable", "The input's duration cannot be measured.")
    max_duration = limits.max_duration_s
    if limits.max_duration_setting:
        max_duration = getattr(settings, limits.max_duration_setting)
    if max_duration is not None and duration > max_duration:
        raise InputRejected(
            "video_too_long",
            f"The input is {duration:.2f} s; {spec.id} takes at most {max_duration:g} s.",
            duration_s=duration,
            max_duration_s=max_duration,
        )
    if limits.min_duration_s is not None and duration < limits.min_duration_s:
        raise InputRejected(
            "video_too_short",
            f"The input is {duration:.2f} s; {spec.id} needs at least {limits.min_duration_s:g} s.",
            duration_s=duration,
            min_duration_s=limits.min_duration_s,
        )


@dataclass(frozen=True)
class Fetched:
    size_bytes: int
    body: bytes | None  # the input itself when small enough to keep in memory, else in ``dest``
    sha256: str | None = None

    def source(self, dest: Path) -> Path | bytes:
        return dest if self.body is None else self.body


async def fetch_input(
    url: str, dest: Path, settings: Settings, max_bytes: int, *, in_memory_max: int = 0
) -> Fetched:
    """Download a tenant's URL under the outbound policy: into memory when it is at most
    ``in_memory_max`` bytes, else to ``dest``."""
    if url.startswith("data:"):
        return await asyncio.to_thread(_decode_data_uri, url, dest, max_bytes, in_memory_max)
    try:
        async with SafeFetcher(outbound_policy(settings, max_bytes)) as fetcher:
            result = await fetcher.download(url, dest, in_memory_max=in_memory_max)
    except ContentTooLarge as exc:
        raise InputRejected(
            "video_too_large", f"The input is larger than {max_bytes} bytes.", max_bytes=max_bytes
        ) from exc
    except UrlRefused as exc:
        raise InputRejected(exc.code, exc.detail, **exc.extra) from exc
    except FetchError as exc:
        if exc.retryable:
            raise InputUnavailable(exc.detail) from exc
        raise InputRejected(
            "video_unreachable", f"The input could not be fetched: {exc.detail}", **exc.extra
        ) from exc
    except OutboundRefused as exc:
        raise InputRejected("video_unreachable", exc.detail, **exc.extra) from exc
    return Fetched(result.size_bytes, result.body, result.sha256)


def _decode_data_uri(url: str, dest: Path, max_bytes: int, in_memory_max: int) -> Fetched:
    header, _, payload = url.partition(",")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise InputRejected(
            "video_too_large", f"The input is larger than {max_bytes} bytes.", max_bytes=max_bytes
        )
    try:
        data = (
            base64.b64decode(payload, validate=True)
            if header.endswith(";base64")
            else unquote_to_bytes(payload)
        )
    except (binascii.Error, ValueError) as exc:
        raise InputRejected("video_unreadable", "The data: URI is not valid.") from exc
    if len(data) > max_bytes:
        raise InputRejected(
            "video_too_large", f"The input is larger than {max_bytes} bytes.", max_bytes=max_bytes
        )
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= in_memory_max:
        return Fetched(len(data), data, digest)
    dest.write_bytes(data)
    return Fetched(len(data), None, digest)


async def preflight(
    *,
    spec: ModelSpec,
    job_input: dict[str, Any],
    upload: StoredFile | None,
    settings: Settings,
    storage: Storage,
    fal: FalClient | None,
    tmp_dir: Path,
    job_id: uuid.UUID,
    secret: bytes,
) -> Checked:
    """``fal`` None: check only (``POST /v1/validate``); an upload is not handed to fal."""
    if upload is not None:
        files_service.ensure_present(upload)
        media = MediaInfo.from_dict(upload.media or {})
        check_limits(spec, media, upload.size_bytes, settings)
        video_url = None
        if fal is not None:
            video_url = await deliver_upload(upload, settings, storage, fal, tmp_dir, secret)
        return Checked(
            _probe_out(media, upload.size_bytes), media.duration_s, video_url, upload.sha256
        )
    max_bytes = min(spec.limits.max_bytes or settings.max_input_bytes, settings.max_input_bytes)
    dest = tmp_dir / f"preflight-{job_id}-{secrets.token_hex(4)}"
    try:
        # One byte over the model's limit is enough to know it is too large.
        fetched = await fetch_input(
            job_input["video_url"], dest, settings, max_bytes + 1, in_memory_max=IN_MEMORY_MAX
        )
        size = fetched.size_bytes
        source = fetched.source(dest)
        try:
            if isinstance(source, bytes) and size <= PROBE_INLINE_MAX:
                media = probe(source)
            else:
                media = await asyncio.to_thread(probe, source)
        except (MediaError, ValueError) as exc:
            raise InputRejected(
                "video_unreadable", f"The input is not a readable video: {exc}", size_bytes=size
            ) from exc
        check_limits(spec, media, size, settings)
        return Checked(_probe_out(media, size), media.duration_s, None, fetched.sha256)
    finally:
        dest.unlink(missing_ok=True)


def _probe_out(media: MediaInfo, size: int) -> dict[str, Any]:
    return {**media.to_dict(), "size_bytes": size}


async def deliver_upload(
    upload: StoredFile,
    settings: Settings,
    storage: Storage,
    fal: FalClient,
    tmp_dir: Path,
    secret: bytes,
) -> str:
    """A URL fal can fetch the upload from, without our API key."""
    if settings.upload_delivery == "signed_url" and settings.public_url:
        return files_service.sign_file_url(
            secret, settings.public_url, upload.id, settings.signed_url_ttl
        )
    async with files_service.local_copy(storage, upload.storage_key, tmp_dir) as path:
        return await fal.upload_file(
            path, upload.content_type, upload.filename, size=upload.size_bytes
        )
