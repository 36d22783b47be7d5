"""A success at fal becomes a success here only once its outputs are fetched (before fal's URLs
expire), measured with PyAV and stored: the job then serves the gateway's own copies."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from app.catalog.registry import CATALOG, ModelSpec
from app.files import service as files
from app.files.outbound import outbound_policy
from app.jobs import lifecycle
from app.jobs.output_options import OutputOptions
from app.jobs.steps import soundtrack
from app.jobs.steps.context import StepContext, webhook_processed
from app.media.errors import MediaError
from app.media.extract import fit_measure_extract
from app.media.normalize import FitResult, fit_audio_to_video
from app.media.probe import MediaInfo, probe
from app.models import FileKind, Job
from app.netguard import FetchError, OutboundRefused, SafeFetcher
from app.telemetry import tracing
from app.upstream.errors import (
    OutputUnavailableError,
    PermanentUpstreamError,
    TransientUpstreamError,
)
from app.webhooks import service as webhooks

log = structlog.get_logger(__name__)


async def finalize(
    ctx: StepContext,
    job: Job,
    output: dict[str, Any],
    inference_s: float | None,
    logs: list[dict[str, Any]] | None,
    webhook_event: uuid.UUID | None,
) -> None:
    with tracing.span("job.finalize"):
        await _finalize(ctx, job, output, inference_s, logs, webhook_event)


async def _finalize(
    ctx: StepContext,
    job: Job,
    output: dict[str, Any],
    inference_s: float | None,
    logs: list[dict[str, Any]] | None,
    webhook_event: uuid.UUID | None,
) -> None:
    spec = CATALOG.resolve(job.model)
    assert spec is not None, f"model {job.model} left the catalog"
    workdir = Path(tempfile.mkdtemp(prefix=f"job-{job.id}-", dir=ctx.tmp_dir))
    made: soundtrack.Soundtrack | None = None
    try:
        if job.output_options is None:
            stored = await _fetch_outputs(ctx, job, spec, output, workdir)
        else:
            made = await _render(ctx, job, spec, output, workdir)
            stored = [
                await store_output(
                    ctx,
                    item.kind,
                    f"jobs/{job.tenant_id}/{job.id}/{item.name}",
                    item.path,
                    item.content_type,
                    await asyncio.to_thread(probe, item.path),
                    None,
                )
                for item in made.files
            ]
    except (MediaError, PermanentUpstreamError) as exc:
        code = "output_unreadable" if isinstance(exc, MediaError) else "output_unavailable"
        await ctx.apply(
            job.id,
            lifecycle.OutputsUnavailable(code, f"Fetching the outputs: {exc}", output, inference_s),
            also=webhook_processed(webhook_event),
        )
        return
    except TransientUpstreamError as exc:
        # Retried until it works, the files expire at fal (a permanent error), or the job times out.
        log.warning("fetching outputs failed; will retry", job_id=str(job.id), error=str(exc))
        await ctx.apply(job.id, lifecycle.RetryLater(str(exc)))
        return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result: dict[str, Any] = {"prompt": _used_prompt(spec, job, output)}
    samples = []
    for item in stored:
        if item.sample is not None:
            samples.append({"audio": describe_output(item)})
            continue
        name = "video" if item.kind is FileKind.output_video else "audio"
        result[name] = describe_output(item)
    if samples:
        # Several outputs of one request: every one in samples, the first also as audio (what
        # a client of single-output models reads).
        result["samples"] = samples
        result["audio"] = samples[0]["audio"]
    if made is not None:
        result["soundtrack"] = made.describe()

    async def record_files(conn: asyncpg.Connection, row: Job) -> None:
        # A repeated finalize (after a crash) replaces the files of the one before.
        await files.replace_job_outputs(
            conn, row.tenant_id, row.id, [item.as_output() for item in stored]
        )
        if webhook_event is not None:
            await webhooks.mark_processed(conn, webhook_event)

    applied = await ctx.apply(
        job.id, lifecycle.Succeeded(result, output, inference_s, logs), also=record_files
    )
    if applied.job.status.terminal:
        log.info("job succeeded", job_id=str(job.id))


@dataclass
class StoredOutput:
    id: uuid.UUID
    kind: FileKind
    key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    media: MediaInfo
    source_url: str | None
    sample: int | None = None  # its place among several outputs of one request

    def as_output(self) -> files.Output:
        return files.Output(
            id=self.id,
            kind=self.kind,
            storage_key=self.key,
            filename=self.filename,
            content_type=self.content_type,
            size_bytes=self.size_bytes,
            sha256=self.sha256,
            media=self.media.to_dict(),
            source_url=self.source_url,
        )


def _file_url(output: dict[str, Any], field: str | None) -> str | None:
    if field is None:
        return None
    value = output.get(field)
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return value["url"]
    return None


def _used_prompt(spec: ModelSpec, job: Job, output: dict[str, Any]) -> str | None:
    if spec.outputs.prompt_field and isinstance(output.get(spec.outputs.prompt_field), str):
        return output[spec.outputs.prompt_field]
    if spec.outputs.prompt_from_payload:
        value = job.upstream_payload.get(spec.outputs.prompt_from_payload)
        return value if isinstance(value, str) else None
    return job.input.get("prompt")


def describe_output(item: StoredOutput) -> dict[str, Any]:
    m = item.media
    out: dict[str, Any] = {
        "file_id": str(item.id),
        "content_type": item.content_type,
        "size_bytes": item.size_bytes,
        "duration_s": m.duration_s,
        "container": m.container,
    }
    if item.kind is FileKind.output_video and m.video is not None:
        out.update(
            width=m.video.width, height=m.video.height, fps=m.video.fps, video_codec=m.video.codec
        )
        if m.audio is not None:
            out.update(
                audio_codec=m.audio.codec,
                sample_rate=m.audio.sample_rate,
                channels=m.audio.channels,
            )
    elif m.audio is not None:
        out.update(codec=m.audio.codec, sample_rate=m.audio.sample_rate, channels=m.audio.channels)
    return out


_EXT = {
    "mp4": "mp4",
    "mov": "mov",
    "webm": "webm",
    "matroska": "mkv",
    "mp3": "mp3",
    "wav": "wav",
    "ogg": "ogg",
}
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "mp4": "audio/mp4",
    "flac": "audio/flac",
}
_VIDEO_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
}


async def _fetch_outputs(
    ctx: StepContext, job: Job, spec: ModelSpec, output: dict[str, Any], workdir: Path
) -> list[StoredOutput]:
    stored: list[StoredOutput] = []
    prefix = f"jobs/{job.tenant_id}/{job.id}"
    video_url = _file_url(output, spec.outputs.video_field)
    audio_url = _file_url(output, spec.outputs.audio_field)
    if spec.outputs.video_field and video_url is None:
        raise PermanentUpstreamError(
            f"the output has no '{spec.outputs.video_field}' file", operation="result"
        )
    if spec.outputs.audio_field and audio_url is None:
        raise PermanentUpstreamError(
            f"the output has no '{spec.outputs.audio_field}' file", operation="result"
        )
    video_path: Path | None = None
    if video_url is not None and spec.outputs.audio_from_video and audio_url is None:
        # ThinkSound: its video's sound fitted, the video measured and its audio copied out,
        # opening the file once (three times, one after the other, before).
        video_path = workdir / "video.bin"
        await download_output(ctx, video_url, video_path)
        made = await asyncio.to_thread(
            fit_measure_extract, video_path, workdir / "video.fitted.mp4", workdir / "audio.m4a"
        )
        _log_fit(job, made.fit)
        ext = _EXT.get(made.media.container, "mp4")
        stored.append(
            await store_output(
                ctx,
                FileKind.output_video,
                f"{prefix}/video.{ext}",
                made.path,
                _VIDEO_TYPES.get(made.media.container, "video/mp4"),
                made.media,
                video_url,
            )
        )
        stored.append(
            await store_output(
                ctx,
                FileKind.output_audio,
                f"{prefix}/audio.m4a",
                workdir / "audio.m4a",
                "audio/mp4",
                made.audio,
                None,
            )
        )
    elif video_url is not None:
        video_path = workdir / "video.bin"
        await download_output(ctx, video_url, video_path)
        if spec.outputs.audio_from_video:
            # ThinkSound's audio can come back up to ~1 s short of the video: pad or trim it to
            # the video's length (the video stream is copied, never re-encoded).
            fitted = workdir / "video.fitted.mp4"
            fit = await asyncio.to_thread(fit_audio_to_video, video_path, fitted)
            _log_fit(job, fit)
            if fit.changed:
                video_path = fitted
        media = await asyncio.to_thread(probe, video_path)
        ext = _EXT.get(media.container, "mp4")
        stored.append(
            await store_output(
                ctx,
                FileKind.output_video,
                f"{prefix}/video.{ext}",
                video_path,
                _VIDEO_TYPES.get(media.container, "video/mp4"),
                media,
                video_url,
            )
        )
    if audio_url is not None:
        audio_path = workdir / "audio.bin"
        await download_output(ctx, audio_url, audio_path)
        media = await asyncio.to_thread(probe, audio_path)
        ext = _EXT.get(media.container, "bin") if media.container != "mp4" else "m4a"
        stored.append(
            await store_output(
                ctx,
                FileKind.output_audio,
                f"{prefix}/audio.{ext}",
                audio_path,
                _AUDIO_TYPES.get(media.container, "application/octet-stream"),
                media,
                audio_url,
            )
        )
    if spec.outputs.audio_samples_field:
        for index, url in enumerate(_file_urls(output, spec.outputs.audio_samples_field)):
            stored.append(await _audio_output(ctx, url, workdir, f"{prefix}/sample-{index}", index))
    return stored


def _log_fit(job: Job, fit: FitResult) -> None:
    if fit.changed:
        log.info(
            "audio fitted to the video",
            job_id=str(job.id),
            padded_s=fit.padded_s,
            trimmed_s=fit.trimmed_s,
        )


def _file_urls(output: dict[str, Any], field: str) -> list[str]:
    """Every file's URL of a list of files (one per sample); none at all is a broken answer."""
    files = output.get(field)
    if not isinstance(files, list) or not files:
        raise PermanentUpstreamError(
            f"the output has no list of files in '{field}'", operation="result"
        )
    urls = [f.get("url") if isinstance(f, dict) else None for f in files]
    if not all(isinstance(url, str) for url in urls):
        raise PermanentUpstreamError(
            f"an item of '{field}' is not a file with a url", operation="result"
        )
    return urls  # type: ignore[return-value]


async def _audio_output(
    ctx: StepContext, url: str, workdir: Path, key: str, sample: int
) -> StoredOutput:
    path = workdir / f"sample-{sample}.bin"
    await download_output(ctx, url, path)
    media = await asyncio.to_thread(probe, path)
    ext = _EXT.get(media.container, "bin") if media.container != "mp4" else "m4a"
    item = await store_output(
        ctx,
        FileKind.output_audio,
        f"{key}.{ext}",
        path,
        _AUDIO_TYPES.get(media.container, "application/octet-stream"),
        media,
        url,
    )
    item.sample = sample
    return item


async def _render(
    ctx: StepContext, job: Job, spec: ModelSpec, output: dict[str, Any], workdir: Path
) -> soundtrack.Soundtrack:
    """The finished sound the job's output options ask for, made from the model's sound (its
    audio file, else its video's track) on the model's video or the caller's original."""
    options = OutputOptions.model_validate(job.output_options)
    video_url = _file_url(output, spec.outputs.video_field)
    sound_url = _file_url(output, spec.outputs.audio_field) or video_url
    if sound_url is None and spec.outputs.audio_samples_field:
        # A model making several samples: the finished sound is made of the first.
        sound_url = _file_urls(output, spec.outputs.audio_samples_field)[0]
    if sound_url is None:
        raise PermanentUpstreamError("the output has no file with sound", operation="result")
    sound = workdir / "sound.bin"
    await download_output(ctx, sound_url, sound)
    async with contextlib.AsyncExitStack() as stack:
        if soundtrack.needs_original(options, model_video=video_url is not None):
            upload = await ctx.input_upload(job)
            picture = await stack.enter_async_context(
                soundtrack.original_video(ctx, job, upload, workdir)
            )
        elif video_url == sound_url:
            picture = sound
        else:
            assert video_url is not None
            picture = workdir / "video.bin"
            await download_output(ctx, video_url, picture)
        return await asyncio.to_thread(soundtrack.render, options, picture, sound, workdir)


async def download_output(ctx: StepContext, url: str, dest: Path) -> None:
    """An output file from fal's CDN, under the same outbound rules as a tenant's input URL
    (every address vetted, every redirect re-checked, size and time capped): an output URL is
    data fal handed us, and a redirect must not take the worker to an internal address."""
    try:
        async with SafeFetcher(outbound_policy(ctx.settings, ctx.settings.max_output_bytes)) as f:
            await f.download(url, dest)
    except FetchError as exc:
        if exc.retryable:
            raise TransientUpstreamError(
                f"output download: {exc.detail}", operation="download"
            ) from exc
        raise OutputUnavailableError(
            f"output download: {exc.detail}", operation="download"
        ) from exc
    except OutboundRefused as exc:  # a URL or an address the policy refuses
        raise OutputUnavailableError(
            f"output download refused: {exc.detail}", operation="download"
        ) from exc


async def store_output(
    ctx: StepContext,
    kind: FileKind,
    key: str,
    path: Path,
    content_type: str,
    media: MediaInfo,
    source_url: str | None,
) -> StoredOutput:
    obj = await ctx.storage.put_file(key, path, content_type=content_type)
    return StoredOutput(
        id=uuid.uuid4(),
        kind=kind,
        key=obj.key,
        filename=key.rsplit("/", 1)[-1],
        content_type=content_type,
        size_bytes=obj.size_bytes,
        sha256=obj.sha256,
        media=media,
        source_url=source_url,
    )
