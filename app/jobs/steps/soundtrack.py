"""The finished sound of a job that asked for output options: the model's sound laid on the video
(replacing its track or mixed under it) or written alone, in the format, sample rate and
loudness asked for (app.jobs.output_options; the media work is app.media.soundtrack).

The picture is the model's own video where it returned one and the job replaces the sound;
mixing needs the video's own track, so it is made on the caller's original video (untouched,
fetched again: an upload from storage, a URL from its source under the outbound rules)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.files import service as files_service
from app.jobs.output_options import OutputOptions
from app.jobs.preflight import InputRejected, InputUnavailable, fetch_input
from app.jobs.steps.context import StepContext
from app.media.encode import AudioFormat, copy_audio_track, file_suffix
from app.media.mixing import MixSettings
from app.media.segments import Segment
from app.media.soundtrack import AudioMode, SoundtrackResult, build_soundtrack, measure_video
from app.media.stitch import SegmentAudio
from app.models import FileKind, Job, StoredFile
from app.upstream.errors import OutputUnavailableError, TransientUpstreamError

# Media types of what `render` writes, by format: the audio alone, and the video carrying it.
AUDIO_TYPES = {
    AudioFormat.AAC: "audio/mp4",
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.WAV: "audio/wav",
    AudioFormat.FLAC: "audio/flac",
    AudioFormat.OPUS: "audio/ogg",
}
VIDEO_TYPES = {AudioFormat.WAV: "video/quicktime"}  # the rest: video/mp4


@dataclass(frozen=True)
class Rendered:
    """A file `render` wrote, and what it is."""

    kind: FileKind
    path: Path
    content_type: str
    name: str  # the file's name in storage: video.mp4, audio.flac …


@dataclass(frozen=True)
class Soundtrack:
    files: list[Rendered]
    made: SoundtrackResult

    def describe(self) -> dict[str, Any]:
        """The job's ``result.soundtrack``."""
        m = self.made
        return {
            "audio_mode": m.mode.value,
            "audio_format": m.audio_format.value,
            "sample_rate": m.sample_rate,
            "channels": m.channels,
            "measured_lufs": m.measured_lufs,
            "gain_db": m.gain_db,
            "expected_lufs": m.expected_lufs,
            "expected_true_peak_dbtp": m.expected_true_peak_dbtp,
        }


def needs_original(options: OutputOptions, model_video: bool) -> bool:
    """Whether the caller's own video is needed: to mix under its track, or as the picture when
    the model returned sound alone."""
    return options.audio_mode is AudioMode.MIX or not model_video


@asynccontextmanager
async def original_video(
    ctx: StepContext, job: Job, upload: StoredFile | None, workdir: Path
) -> AsyncIterator[Path]:
    """The caller's video, as given: a path PyAV can open while the block runs.

    Raises TransientUpstreamError when its source failed for now (try again later), and
    OutputUnavailableError when it is gone (the URL no longer answers, the upload expired)."""
    if upload is not None:
        try:
            files_service.ensure_present(upload)
        except files_service.FileRemoved as exc:
            raise OutputUnavailableError(
                f"the input upload is gone: {exc.detail}", operation="original"
            ) from exc
        async with files_service.local_copy(ctx.storage, upload.storage_key, workdir) as path:
            yield path
        return
    dest = workdir / "original.bin"
    try:
        await fetch_input(job.input["video_url"], dest, ctx.settings, ctx.settings.max_input_bytes)
    except InputUnavailable as exc:
        raise TransientUpstreamError(f"the input video: {exc}", operation="original") from exc
    except InputRejected as exc:
        raise OutputUnavailableError(
            f"the input video can no longer be fetched: {exc.message}", operation="original"
        ) from exc
    yield dest


def render(
    options: OutputOptions, picture: Path, sound: Path | Sequence[SegmentAudio], workdir: Path
) -> Soundtrack:
    """Write the finished sound (synchronous, CPU bound: from async code through a thread).
    ``picture``: the video the sound goes on (its length is the soundtrack's); ``sound``: the
    model's output holding the generated audio (an audio file, or a video with sound), or the
    sound of each segment of a split job (crossfaded where they overlap)."""
    alone = options.audio_mode is AudioMode.GENERATED_ONLY
    fmt = options.audio_format
    name = ("audio" if alone else "video") + file_suffix(fmt, with_video=not alone)
    out = workdir / f"{uuid.uuid4().hex}-{name}"
    if isinstance(sound, Path):
        sound = [SegmentAudio(Segment(0.0, measure_video(picture).duration_s), sound)]
    made = build_soundtrack(
        picture,
        sound,
        out,
        mode=options.audio_mode,
        audio_format=fmt,
        pcm=options.pcm(),
        loudness=None if options.loudness is None else options.loudness.target(),
        mix=MixSettings() if options.mix is None else options.mix.settings(),
    )
    audio_name = "audio" + file_suffix(fmt, with_video=False)
    if alone:
        return Soundtrack([Rendered(FileKind.output_audio, out, AUDIO_TYPES[fmt], name)], made)
    audio = workdir / f"{uuid.uuid4().hex}-{audio_name}"
    copy_audio_track(out, audio, fmt=fmt)
    return Soundtrack(
        [
            Rendered(FileKind.output_video, out, VIDEO_TYPES.get(fmt, "video/mp4"), name),
            Rendered(FileKind.output_audio, audio, AUDIO_TYPES[fmt], audio_name),
        ],
        made,
    )
