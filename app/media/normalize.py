"""Fit a video's audio track to the video's length, without touching the video.

ThinkSound returns the input video with its generated audio, and that audio can be up to ~1 s
shorter than the video (see the model reference). `fit_audio_to_video()` makes the audio exactly
as long as the video:

* the **video is stream-copied**: every packet goes to the new file byte for byte, with its
  timestamps (all moved by the same amount when the video does not start at 0, as in an MP4
  written without an edit list); nothing is decoded;
* the **audio is decoded**, placed on the video's timeline by its timestamps, cut at the video's
  end or completed with digital silence, and **re-encoded as AAC** (same sample rate and channel
  layout, `AAC_BIT_RATE_PER_CHANNEL`). Where the original audio stops (the model's last sample
  before the padding, or the video's end when trimming) it gets a `FADE_S` raised-cosine
  fade-out, so the cut is not heard as a click;
* the encoder's priming samples (1024 for FFmpeg's AAC encoder) and the padding of its last frame
  are hidden by the MP4 edit list the muxer writes, so an edit-list-aware reader (FFmpeg, every
  browser, QuickTime) sees exactly `round(video duration × sample rate)` samples. A decoder that
  ignores the trailing trim decodes at most one AAC frame (1024 samples) more, all silence.

Only the first real video stream and the first audio stream are written (other streams, e.g.
subtitles or a second audio track, are dropped). It is synchronous and CPU/IO bound: from async
code call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import numpy as np

from app.media.errors import MediaError, MediaUnreadableError, NoAudioStreamError
from app.media.probe import open_input, primary_stream

# The input must be ISO-BMFF (MP4/MOV), which is what the models return: its edit lists give exact
# stream durations and hide the AAC priming. Matroska's millisecond ticks and missing DTS on
# reordered video frames would make the exact promises of this module approximate.
_ISO_BMFF_DEMUXERS: frozenset[str] = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"})
_ISO_BMFF_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"
# One AAC frame (1024 samples) at ThinkSound's 44.1 kHz, ~23.2 ms. Closer than that there is
# nothing worth a lossy re-encode: it is less than one video frame at up to 43 fps, and a reader
# that ignores MP4 edit lists sees any AAC track's length only to the nearest frame anyway.
DEFAULT_TOLERANCE_S = 1024 / 44_100
# The fade-out where the original audio stops: long enough to remove the click of a waveform cut
# mid-cycle, short enough not to be heard as a fade.
FADE_S = 0.020
# 192 kbps for stereo: transparent for FFmpeg's native AAC encoder on generated sound effects.
AAC_BIT_RATE_PER_CHANNEL = 96_000
# FFmpeg's native AAC encoder: samples per frame, and the rates it can encode.
AAC_FRAME_SAMPLES = 1024
_AAC_RATES = (96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000,
              11_025, 8_000, 7_350)  # fmt: skip
# Later audio frames whose timestamps are this close to where the previous frame ended are taken
# as contiguous (a MOV track's timescale can be coarser than the sample rate); a larger jump is
# a gap (filled with silence) or an overlap (dropped).
_CONTIGUITY_SLACK_S = 0.010


@dataclass(frozen=True)
class FitResult:
    """What `fit_audio_to_video()` found and did.

    `changed` is False when the audio was already as long as the video (within the tolerance)
    and nothing was written. Durations are the streams' (what `probe()` reports); `padded_s` is
    the silence added (at the end, or before/inside the audio when its timestamps leave a gap),
    `trimmed_s` the original audio dropped (past the video's end, or before its start).
    """

    changed: bool
    video_duration_s: float
    audio_duration_before_s: float
    audio_duration_after_s: float
    padded_s: float
    trimmed_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Spans:
    video_start_s: Fraction
    video_duration_s: Fraction
    audio_start_s: Fraction
    audio_duration_s: Fraction


def fit_audio_to_video(
    video_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> FitResult:
    """Make the audio of the MP4/MOV video at `video_path` exactly as long as its video stream.

    When the audio stream's duration is within `tolerance_s` of the video stream's, nothing is
    written and the result says `changed=False` (keep the original). Otherwise a new MP4 appears
    at `out_path` (written beside it, then renamed, so only ever complete) with the video copied
    packet for packet and the audio trimmed or padded and re-encoded (see the module docstring).

    Raises `NoAudioStreamError` when the input has no audio stream, `MediaUnreadableError` when
    it cannot be read or has no video stream, `MediaError` when it is not MP4/MOV or its video
    codec cannot be stream-copied into an MP4, `FileNotFoundError` when there is no such file.
    On any error nothing is left at or beside `out_path`.
    """
    video_path = Path(video_path)
    with open_input(video_path) as source:
        return fit_opened(source, video_path, out_path, tolerance_s=tolerance_s)


def fit_opened(
    source: av.container.InputContainer,
    video_path: Path,
    out_path: str | os.PathLike[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> FitResult:
    """``fit_audio_to_video`` of the video at ``video_path``, already open as ``source``: only
    its headers are read, so the caller may read it on when nothing changed (one opening of
    the file for everything done with it)."""
    if tolerance_s < 0:
        raise ValueError("tolerance_s must not be negative")
    out_path = Path(out_path)
    if source.format.name != _ISO_BMFF_DEMUXER:
        raise MediaError(
            f"{video_path.name} is {source.format.long_name or source.format.name}; "
            "only MP4/MOV videos can have their audio fitted"
        )
    try:
        spans = _measure(source, video_path.name)
    except av.FFmpegError as exc:
        raise MediaUnreadableError(f"cannot read media streams: {exc}") from exc

    video_s = float(spans.video_duration_s)
    audio_before_s = float(spans.audio_duration_s)
    if abs(audio_before_s - video_s) <= tolerance_s:
        return FitResult(
            changed=False,
            video_duration_s=_round(video_s),
            audio_duration_before_s=_round(audio_before_s),
            audio_duration_after_s=_round(audio_before_s),
            padded_s=0.0,
            trimmed_s=0.0,
        )

    tmp_path = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open_input(video_path, demuxers=_ISO_BMFF_DEMUXERS) as source:
            # The temporary name has no .mp4 extension, so the muxer is named explicitly.
            # faststart: the index goes first, so a browser can play the file while it downloads.
            with av.open(
                str(tmp_path), "w", format="mp4", options={"movflags": "+faststart"}
            ) as target:
                fitter = _rewrite(source, target, spans)
        with open_input(tmp_path, demuxers=_ISO_BMFF_DEMUXERS) as written:
            audio_after_s = float(_span(written.streams.audio[0])[1] or spans.video_duration_s)
        os.replace(tmp_path, out_path)
    except av.FFmpegError as exc:
        if isinstance(exc, OSError):  # disk full, permissions: not the media's fault
            raise
        raise MediaUnreadableError(f"cannot fit the audio to the video: {exc}") from exc
    finally:
        tmp_path.unlink(missing_ok=True)

    return FitResult(
        changed=True,
        video_duration_s=_round(video_s),
        audio_duration_before_s=_round(audio_before_s),
        audio_duration_after_s=_round(audio_after_s),
        padded_s=_round(fitter.padded / fitter.rate),
        trimmed_s=_round(fitter.trimmed / fitter.rate),
    )


def _measure(source: av.container.InputContainer, name: str) -> _Spans:
    """Where the video and the audio start and how long they last, exactly (as fractions of a
    second), by their streams' headers: the durations `probe()` reports, i.e. the MP4 edit
    list's (FFmpeg sums a fragmented MP4's fragments)."""
    video = primary_stream(source, "video")
    audio = primary_stream(source, "audio")
    if audio is None:
        raise NoAudioStreamError(f"{name} has no audio stream")
    if video is None:
        raise MediaUnreadableError(f"{name} has no video stream to fit the audio to")
    (video_start, video_duration), (audio_start, audio_duration) = _span(video), _span(audio)
    if not video_duration:
        raise MediaUnreadableError(f"{name}: the video stream has no duration")
    if audio_duration is None:
        raise MediaUnreadableError(f"{name}: the audio stream has no duration")
    return _Spans(video_start, video_duration, audio_start, audio_duration)


def _span(stream: Any) -> tuple[Fraction, Fraction | None]:
    """(start, duration) of a stream by its header, in seconds; duration None when unknown."""
    time_base = Fraction(stream.time_base) if stream.time_base else None
    if time_base is None:
        return Fraction(0), None
    start = Fraction(stream.start_time or 0) * time_base
    duration = stream.duration * time_base if stream.duration and stream.duration > 0 else None
    return start, duration


def _rewrite(
    source: av.container.InputContainer, target: av.container.OutputContainer, spans: _Spans
) -> _AudioFitter:
    """Copy the video and write the fitted audio. The output timeline starts at the video's
    first instant: a video that starts late (no edit list) is moved to 0, packets untouched, and
    the audio moves with it, so the sync is kept and the muxer can hide the AAC priming."""
    video_in = primary_stream(source, "video")
    audio_in = primary_stream(source, "audio")
    try:
        video_out = target.add_stream_from_template(video_in)
    except ValueError as exc:  # PyAV: the muxer cannot carry this codec
        raise MediaError(f"the video stream cannot be copied into an MP4: {exc}") from exc
    # In the video stream's own ticks; 0 for an MP4 whose edit list starts the video at 0.
    video_shift = round(spans.video_start_s / video_in.time_base)

    in_ctx = audio_in.codec_context
    rate = in_ctx.sample_rate if in_ctx.sample_rate in _AAC_RATES else 48_000
    layout = _layout_name(in_ctx)
    audio_out: Any = target.add_stream("aac", rate=rate, layout=layout)
    channels = audio_out.codec_context.channels
    audio_out.codec_context.bit_rate = AAC_BIT_RATE_PER_CHANNEL * channels
    audio_out.time_base = Fraction(1, rate)
    language = audio_in.metadata.get("language")
    if language and language != "und":
        audio_out.metadata["language"] = language
    # Format and layout only; the rate changes just for a rate AAC cannot carry.
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)

    origin = round(spans.video_start_s * rate)
    fitter = _AudioFitter(
        audio_out,
        rate=rate,
        channels=channels,
        layout=layout,
        origin=origin,
        target=round(spans.video_duration_s * rate),
        content_end=round((spans.audio_start_s + spans.audio_duration_s) * rate) - origin,
    )
    for packet in source.demux(video_in, audio_in):
        if packet.stream is video_in:
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            if video_shift:
                packet.pts = None if packet.pts is None else packet.pts - video_shift
                packet.dts = None if packet.dts is None else packet.dts - video_shift
            packet.stream = video_out
            target.mux(packet)
        else:
            # The end-of-stream marker is decoded too: it flushes the decoder.
            for frame in packet.decode():
                for converted in resampler.resample(frame):  # type: ignore[arg-type]
                    target.mux(fitter.push(converted))
    for converted in resampler.resample(None):
        target.mux(fitter.push(converted))
    target.mux(fitter.finish())
    return fitter


class _AudioFitter:
    """Lays decoded audio frames on the output timeline (sample 0 = the video's first instant),
    keeps what falls inside [0, target) and before the audio's own end (the decoder also
    returns the encoder's padding of the last frame, which is not content), fades out the last
    original samples, pads with silence and feeds the encoder in whole AAC frames.

    The last `fade` samples are held back until the end, so they can still be faded."""

    def __init__(
        self,
        stream: Any,
        *,
        rate: int,
        channels: int,
        layout: str,
        origin: int,
        target: int,
        content_end: int,
    ) -> None:
        self.stream = stream
        self.rate = rate
        self.channels = channels
        self.layout = layout
        self.origin = origin
        self.target = target
        self.content_end = content_end
        self.fade = max(1, round(FADE_S * rate))
        self.padded = 0
        self.trimmed = 0
        self._cut = False  # original audio was dropped at the video's end
        self._placed = 0  # samples laid on the timeline so far (kept audio and silence)
        self._cursor = 0  # timeline position of the next decoded sample
        self._encoded = 0  # samples handed to the encoder so far
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._first = True

    def push(self, frame: av.AudioFrame) -> list[av.Packet]:
        samples = frame.to_ndarray().astype(np.float32, copy=False)
        count = samples.shape[1]
        position = self._position(frame)
        # The first frame is placed exactly where its timestamp says; later ones only when they
        # jump (a gap or an overlap), so timestamp rounding cannot chop the audio up.
        if position is not None and (
            self._first or abs(position - self._cursor) > _CONTIGUITY_SLACK_S * self.rate
        ):
            self._cursor = position
        self._first = False
        begin, self._cursor = self._cursor, self._cursor + count

        # A gap in the audio inside the video: silence.
        self._append_silence(min(begin, self.target) - self._placed)
        # Samples where audio is laid already (an overlap) or before the video starts: dropped.
        low = max(begin, self._placed)
        self.trimmed += min(count, low - begin)
        # Kept: up to the video's end, and up to the audio's own end (the decoder also returns
        # the encoder's padding of the last frame, which is not content).
        high = min(begin + count, self.target, self.content_end)
        if high > low:
            self._append(samples[:, low - begin : high - begin])
        # Original audio past the video's end: trimmed.
        beyond = min(begin + count, self.content_end) - max(low, self.target)
        if beyond > 0:
            self.trimmed += beyond
            self._cut = True
        return self._drain(hold=self.fade)

    def finish(self) -> list[av.Packet]:
        """Fade out, pad to the target, encode the rest and flush the encoder."""
        missing = self.target - self._placed
        if (missing > 0 or self._cut) and self._pending_len:
            tail = np.concatenate(self._pending, axis=1)
            n = min(self.fade, tail.shape[1])
            # Half a raised cosine from 1 down to 0 at the last original sample.
            ramp = 0.5 * (1 + np.cos(np.pi * np.arange(1, n + 1) / n))
            tail[:, -n:] *= ramp.astype(np.float32)
            self._pending, self._pending_len = [tail], tail.shape[1]
        if missing > 0:
            self._append_silence(missing)
        packets = self._drain(hold=0)
        packets.extend(self.stream.encode(None))
        return packets

    def _position(self, frame: av.AudioFrame) -> int | None:
        if frame.pts is None or frame.time_base is None:
            return None
        return round(Fraction(frame.pts) * frame.time_base * self.rate) - self.origin

    def _append(self, samples: np.ndarray) -> None:
        if samples.shape[1]:
            self._pending.append(samples)
            self._pending_len += samples.shape[1]
            self._placed += samples.shape[1]

    def _append_silence(self, count: int) -> None:
        if count > 0:
            self._append(np.zeros((self.channels, count), np.float32))
            self.padded += count

    def _drain(self, *, hold: int) -> list[av.Packet]:
        """Encode whole frames while more than `hold` samples wait (with `hold=0`, everything,
        the last frame possibly short: the encoder pads it and the muxer's edit list hides it)."""
        packets: list[av.Packet] = []
        if self._pending_len - hold < (AAC_FRAME_SAMPLES if hold else 1):
            return packets
        buffer = np.concatenate(self._pending, axis=1)
        offset = 0
        while buffer.shape[1] - offset - hold >= AAC_FRAME_SAMPLES or (
            not hold and offset < buffer.shape[1]
        ):
            chunk = buffer[:, offset : offset + AAC_FRAME_SAMPLES]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format="fltp", layout=self.layout
            )
            frame.sample_rate = self.rate
            frame.time_base = Fraction(1, self.rate)
            frame.pts = self._encoded
            self._encoded += chunk.shape[1]
            offset += chunk.shape[1]
            packets.extend(self.stream.encode(frame))
        rest = buffer[:, offset:]
        self._pending, self._pending_len = ([rest], rest.shape[1]) if rest.shape[1] else ([], 0)
        return packets


def _layout_name(ctx: Any) -> str:
    """The input's channel layout by name; an unnamed one ("2 channels") by its channel count."""
    name = ctx.layout.name if ctx.channels else ""
    if name and "channels" not in name:
        return str(name)
    return {1: "mono", 2: "stereo"}.get(ctx.channels, name or "stereo")


def _round(value: float) -> float:
    return round(value, 6)
