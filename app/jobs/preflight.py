"""Preflight: look at the input before paying for anything.

The worker fetches the input (through the SSRF-safe fetcher, size- and time-capped), probes it
with PyAV (the real container, not the extension; duration; streams), checks it against the
model's limits, and only then lets the submit happen. A violation fails the job at once with a
stable code and the measured value, and no upstream request is made. The probe is kept on the
job and its duration re-prices the budget reservation (ThinkSound bills by compute time).

Uploads were probed when they were uploaded; for them this step also hands the file to fal:
through fal's CDN upload flow, or as a signed, expiring gateway URL.

An audio clip a model takes beside the video (ControlFoley's reference) is checked the same way:
fetched or read from its upload, probed, held to the model's length range (``audio_*`` codes),
and an upload handed to fal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from app.catalog.registry import AudioInput, ModelSpec
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
    # fal's fields to set (an audio upload's URL for fal), beside video_url
    payload_updates: dict[str, Any] = field(default_factory=dict)


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
    # After the length: a video too long for the model may run as segments, each of which is
    # held to the model's size on its own.
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise InputRejected(
            "video_too_large",
            f"The input is {size} bytes; the limit is {limits.max_bytes}.",
            size_bytes=size,
            max_bytes=limits.max_bytes,
        )


def check_start_offset(spec: ModelSpec, job_input: Mapping[str, Any], duration: float) -> None:
    """A start offset must leave at least the model's shortest output of video after it."""
    probed = spec.probed_duration
    if probed is None or probed.offset_field is None:
        return
    name = spec.normalized_name(probed.offset_field)
    offset = float(job_input.get(name) or 0) if name else 0.0
    if duration - offset < probed.min_s:
        raise InputRejected(
            "start_offset_too_late",
            f"The input is {duration:.2f} s; starting at {offset:g} s leaves less than "
            f"{probed.min_s:g} s for {spec.id}.",
            param=f"input.{name}",
            duration_s=duration,
            start_offset=offset,
            min_output_s=probed.min_s,
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
    audio_uploads: Mapping[str, StoredFile] | None = None,
) -> Checked:
    """``fal`` None: check only (``POST /v1/validate``); an upload is not handed to fal.
    ``audio_uploads``: the tenant's uploads an audio input names, by its normalized field."""
    checked = await _check_video(
        spec=spec,
        job_input=job_input,
        upload=upload,
        settings=settings,
        storage=storage,
        fal=fal,
        tmp_dir=tmp_dir,
        job_id=job_id,
        secret=secret,
    )
    if checked.duration_s is not None:
        check_start_offset(spec, job_input, checked.duration_s)
    updates: dict[str, Any] = {}
    for audio in spec.audio_inputs:
        url = await _check_audio(
            audio,
            job_input,
            (audio_uploads or {}).get(audio.file_param),
            settings=settings,
            storage=storage,
            fal=fal,
            tmp_dir=tmp_dir,
            job_id=job_id,
            secret=secret,
        )
        if url is not None:
            updates[audio.upstream_field] = url
    if not updates:
        return checked
    return Checked(
        checked.probe,
        checked.duration_s,
        checked.video_url,
        sha256=checked.sha256,
        payload_updates=updates,
    )


async def _check_video(
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
    max_bytes = settings.max_input_bytes
    if (
        not spec.segments
    ):  # else a longer, larger video may still run as segments of the model's size
        max_bytes = min(spec.limits.max_bytes or max_bytes, max_bytes)
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


def check_audio(audio: AudioInput, media: MediaInfo, param: str) -> None:
    """An audio input: an audio stream whose length is within the model's range."""
    if media.audio is None or media.duration_s is None:
        raise InputRejected(
            "audio_unreadable", "The reference has no measurable audio stream.", param=param
        )
    duration = media.duration_s
    if duration < audio.min_duration_s:
        raise InputRejected(
            "audio_too_short",
            f"The reference audio is {duration:.2f} s; it must be at least "
            f"{audio.min_duration_s:g} s.",
            param=param,
            duration_s=duration,
            min_duration_s=audio.min_duration_s,
        )
    if duration > audio.max_duration_s:
        raise InputRejected(
            "audio_too_long",
            f"The reference audio is {duration:.2f} s; it must be at most "
            f"{audio.max_duration_s:g} s.",
            param=param,
            duration_s=duration,
            max_duration_s=audio.max_duration_s,
        )


# A reference clip of a few seconds: a megabyte is generous (4 s of 48 kHz stereo WAV: 768 kB),
# and a tenant's URL cannot make the worker fetch more.
AUDIO_INPUT_MAX_BYTES = 8 * 1024 * 1024


async def _check_audio(
    audio: AudioInput,
    job_input: Mapping[str, Any],
    upload: StoredFile | None,
    *,
    settings: Settings,
    storage: Storage,
    fal: FalClient | None,
    tmp_dir: Path,
    job_id: uuid.UUID,
    secret: bytes,
) -> str | None:
    """Check one audio input; the URL fal gets for an upload (None: the payload's URL stands,
    or there is no such input)."""
    if upload is not None:
        param = f"input.{audio.file_param}"
        files_service.ensure_present(upload)
        check_audio(audio, MediaInfo.from_dict(upload.media or {}), param)
        if fal is None:
            return None
        return await deliver_upload(upload, settings, storage, fal, tmp_dir, secret)
    url = job_input.get(audio.url_param)
    if not url:
        return None
    param = f"input.{audio.url_param}"
    max_bytes = min(AUDIO_INPUT_MAX_BYTES, settings.max_input_bytes)
    dest = tmp_dir / f"preflight-{job_id}-{secrets.token_hex(4)}"
    try:
        try:
            fetched = await fetch_input(url, dest, settings, max_bytes, in_memory_max=max_bytes)
        except InputRejected as exc:
            code = exc.code.replace("video_", "audio_")
            message = exc.message.replace("The input", "The reference audio")
            raise InputRejected(code, message, param=param, **exc.measured) from exc
        try:
            media = await asyncio.to_thread(probe, fetched.source(dest))
        except (MediaError, ValueError) as exc:
            raise InputRejected(
                "audio_unreadable", f"The reference audio cannot be read: {exc}", param=param
            ) from exc
        check_audio(audio, media, param)
        return None
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
