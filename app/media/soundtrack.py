"""The finished sound of a job: segments' audio stitched, mixed, loudness-normalized, encoded.

`build_soundtrack()` is what a worker step calls once every segment's audio is in (files in,
one file out):

1. **pass 1**: the segments' tracks are stitched (`app.media.stitch`), in `mix` mode laid under
   the video's own track (`app.media.mixing`), measured (`app.media.loudness.LoudnessMeter`)
   and spooled as float32 to a file beside the output, one-second block by block;
2. the gain is planned from the measurement (pure);
3. **pass 2**: the spool is read back, the gain applied, and the result encoded: muxed onto the
   untouched video (`replace`, `mix`) or written alone (`generated_only`).

Memory stays at a few blocks plus the per-millisecond loudness arrays (~10 MB for 10 minutes),
whatever the length; the spool costs 4 bytes per sample of disk (~230 MB for 10 minutes of
48 kHz stereo) and is removed at the end. Synchronous and CPU bound: call it from async code
through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from app.media.encode import (
    AudioFormat,
    check_format,
    headroom_for,
    mux_onto_video,
    write_audio_file,
)
from app.media.errors import MediaUnreadableError
from app.media.loudness import GainPlan, LoudnessMeter, LoudnessTarget, plan_gain
from app.media.mixing import MixSettings, mix_blocks
from app.media.pcm import PcmFormat, track_blocks
from app.media.probe import open_input, primary_stream
from app.media.stitch import DEFAULT_CROSSFADE_S, SegmentAudio, stitch_blocks


class AudioMode(StrEnum):
    REPLACE = "replace"  # the generated sound replaces the video's own (the default)
    MIX = "mix"  # the generated sound under the video's own, ducked where that is loud
    GENERATED_ONLY = "generated_only"  # the audio file alone, no video


@dataclass(frozen=True)
class SoundtrackResult:
    """What was written. `mode` is the mode applied: `mix` on a video without audio is
    `replace` (there is nothing to keep). Loudness figures are None when not normalized."""

    path: Path
    mode: AudioMode
    audio_format: AudioFormat
    sample_rate: int
    channels: int
    duration_s: float
    measured_lufs: float | None
    gain_db: float | None
    limited_db: float | None
    expected_lufs: float | None
    expected_true_peak_dbtp: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path)}


@dataclass(frozen=True)
class VideoTrack:
    duration_s: float
    has_audio: bool


def build_soundtrack(
    video_path: str | os.PathLike[str],
    tracks: Sequence[SegmentAudio],
    out_path: str | os.PathLike[str],
    *,
    mode: AudioMode = AudioMode.REPLACE,
    audio_format: AudioFormat = AudioFormat.AAC,
    pcm: PcmFormat = PcmFormat(),
    loudness: LoudnessTarget | None = LoudnessTarget(),
    mix: MixSettings = MixSettings(),
    crossfade_s: float = DEFAULT_CROSSFADE_S,
) -> SoundtrackResult:
    """The job's output at `out_path` (see the module docstring). `tracks` are the segments'
    generated audio (a single segment covering the whole video is fine); `loudness=None` leaves
    the level as stitched. Suffix the path with `encode.file_suffix()`.

    Raises ValueError for a format the sample rate does not fit, `SegmentPlanError` when the
    segments leave a hole, `MediaUnreadableError` / `NoAudioStreamError` for unreadable inputs.
    """
    check_format(audio_format, pcm)
    out_path = Path(out_path)
    video = measure_video(video_path)
    if mode is AudioMode.MIX and not video.has_audio:
        mode = AudioMode.REPLACE
    frames = pcm.frames(video.duration_s)
    blocks: Iterable[np.ndarray] = stitch_blocks(
        tracks, duration_s=video.duration_s, pcm=pcm, crossfade_s=crossfade_s
    )
    if mode is AudioMode.MIX:
        original = track_blocks(video_path, pcm, frames=frames)
        blocks = mix_blocks(original, blocks, pcm=pcm, settings=mix)

    spool = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.f32")
    try:
        meter = LoudnessMeter(pcm)
        with spool.open("wb") as sink:
            for block in blocks:
                meter.push(block)
                sink.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        plan = None
        if loudness is not None:
            headroom = max(loudness.headroom_db, headroom_for(audio_format))
            target = replace(loudness, headroom_db=headroom)
            plan = plan_gain(meter.result(), target)
        with spool.open("rb") as source:
            final = _normalized(_spooled(source, pcm, frames), plan)
            if mode is AudioMode.GENERATED_ONLY:
                write_audio_file(final, out_path, fmt=audio_format, pcm=pcm)
            else:
                mux_onto_video(video_path, final, out_path, fmt=audio_format, pcm=pcm)
    finally:
        spool.unlink(missing_ok=True)
    return SoundtrackResult(
        path=out_path,
        mode=mode,
        audio_format=audio_format,
        sample_rate=pcm.rate,
        channels=pcm.channels,
        duration_s=frames / pcm.rate,
        measured_lufs=None if plan is None else plan.measured_lufs,
        gain_db=None if plan is None else plan.gain_db,
        limited_db=None if plan is None else plan.limited_db,
        expected_lufs=None if plan is None else plan.expected_lufs,
        expected_true_peak_dbtp=None if plan is None else plan.expected_true_peak_dbtp,
    )


def _spooled(source: BinaryIO, pcm: PcmFormat, frames: int) -> Iterator[np.ndarray]:
    for first in range(0, frames, pcm.block):
        count = min(pcm.block, frames - first)
        data = source.read(pcm.channels * count * 4)
        yield np.frombuffer(data, np.float32).reshape(pcm.channels, count)


def _normalized(blocks: Iterable[np.ndarray], plan: GainPlan | None) -> Iterator[np.ndarray]:
    first = 0
    for block in blocks:
        yield block if plan is None else plan.apply(block, first)
        first += block.shape[1]


def measure_video(video_path: str | os.PathLike[str]) -> VideoTrack:
    """The video stream's length (by its header), and whether there is audio."""
    with open_input(video_path) as container:
        video = primary_stream(container, "video")
        if video is None or not video.duration or not video.time_base:
            raise MediaUnreadableError("the file has no video stream with a duration")
        has_audio = primary_stream(container, "audio") is not None
        return VideoTrack(float(video.duration * video.time_base), has_audio)
