"""Real, tiny, deterministic video clips for tests.

The main clip is a bright square bouncing on a dark background. Its trajectory is analytic, so
the instants it hits the floor or a wall are known exactly and tests can check that generated
audio lands on them. Vertically the square falls under gravity and bounces elastically every
`FLOOR_PERIOD_S`; horizontally it moves at constant speed and reverses at the walls every
`WALL_CROSSING_S`. With both periods at 0.8 s and the first floor hit at 0.4 s, impacts
alternate floor / wall exactly every 0.4 s and never coincide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av
import numpy as np

Container = Literal["mp4", "mov", "webm", "mkv", "avi"]

FLOOR_PERIOD_S = 0.8
WALL_CROSSING_S = 0.8
# Phase: the square starts at the top of its arc, so it first lands half a period in.
FIRST_FLOOR_HIT_S = FLOOR_PERIOD_S / 2

_FORMAT_FOR_CONTAINER: dict[str, str] = {
    "mp4": "mp4",
    "mov": "mov",
    "webm": "webm",
    "mkv": "matroska",
    "avi": "avi",
}
_DEFAULT_VIDEO_CODEC: dict[str, str] = {
    "mp4": "libx264",
    "mov": "libx264",
    "webm": "libvpx",
    "mkv": "libx264",
    "avi": "mpeg4",
}
# (codec, sample format). AVI gets PCM: with a delayed codec (mp3) FFmpeg's AVI muxer
# shifts the video timestamps by a frame, which would falsify the ground truth.
_AUDIO_CODEC: dict[str, tuple[str, str]] = {
    "mp4": ("aac", "fltp"),
    "mov": ("aac", "fltp"),
    "webm": ("libopus", "flt"),
    "mkv": ("aac", "fltp"),
    "avi": ("pcm_s16le", "s16"),
}


@dataclass(frozen=True)
class Clip:
    path: Path
    duration_s: float
    fps: float
    width: int
    height: int
    container: str
    has_audio: bool
    impact_times: list[float]
    frame_times: list[float]


def bouncing_square_impacts(duration_s: float) -> list[float]:
    """Every instant in (0, duration_s) at which the square touches the floor or a wall."""
    floor = _arithmetic(FIRST_FLOOR_HIT_S, FLOOR_PERIOD_S, duration_s)
    # t = 0 is the square resting against the left wall, not a collision.
    walls = _arithmetic(WALL_CROSSING_S, WALL_CROSSING_S, duration_s)
    return sorted(floor + walls)


def make_bouncing_square(
    path: str | Path,
    *,
    duration_s: float = 4.0,
    fps: float = 24,
    width: int = 320,
    height: int = 240,
    container: Container = "mp4",
    with_audio: bool = False,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    vfr: bool = False,
    background: int = 24,
    foreground: int = 230,
    grain: float = 0.0,
) -> Clip:
    """Encode the bouncing-square clip and return its ground truth.

    `vfr=True` alternates frame intervals of 0.6/fps and 1.4/fps (same mean rate) so decoders
    must use real timestamps. `background`/`foreground` are grey levels 0..255. `grain` adds
    per-frame Gaussian noise of that standard deviation (grey levels), seeded by frame index:
    it makes the clip cost as much to decode as real footage, for benchmarks.
    """
    times = _frame_times(duration_s, fps, vfr)
    side = max(2.0, height / 8)
    frames = (
        _grainy(
            _square_frame(t, width=width, height=height, side=side, bg=background, fg=foreground),
            grain,
            seed=i,
        )
        for i, t in enumerate(times[:-1])
    )
    _encode(
        Path(path),
        frames,
        times=times,
        fps=fps,
        width=width,
        height=height,
        container=container,
        codec=codec,
        pix_fmt=pix_fmt,
        vfr=vfr,
        with_audio=with_audio,
    )
    total = times[-1]
    return Clip(
        path=Path(path),
        duration_s=total,
        fps=float(fps),
        width=width,
        height=height,
        container=container,
        has_audio=with_audio,
        impact_times=bouncing_square_impacts(total),
        frame_times=times[:-1],
    )


def make_static_clip(
    path: str | Path,
    *,
    duration_s: float = 4.0,
    fps: float = 24,
    width: int = 320,
    height: int = 240,
    container: Container = "mp4",
    brightness: int = 128,
    with_audio: bool = False,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
) -> Clip:
    """A clip with no motion at all: a fixed soft gradient around grey level `brightness`."""
    times = _frame_times(duration_s, fps, vfr=False)
    ramp = np.linspace(-12.0, 12.0, width)[None, :] + np.linspace(-6.0, 6.0, height)[:, None]
    still = np.clip(brightness + ramp, 0, 255).astype(np.uint8)
    _encode(
        Path(path),
        (still for _ in times[:-1]),
        times=times,
        fps=fps,
        width=width,
        height=height,
        container=container,
        codec=codec,
        pix_fmt=pix_fmt,
        vfr=False,
        with_audio=with_audio,
    )
    return Clip(
        path=Path(path),
        duration_s=times[-1],
        fps=float(fps),
        width=width,
        height=height,
        container=container,
        has_audio=with_audio,
        impact_times=[],
        frame_times=times[:-1],
    )


def _arithmetic(first: float, step: float, end: float) -> list[float]:
    count = math.ceil((end - first) / step) if end > first else 0
    return [t for t in (first + k * step for k in range(count)) if 0 < t < end]


def _frame_times(duration_s: float, fps: float, vfr: bool) -> list[float]:
    """Presentation times of every frame plus, as the last item, the end of the last frame.

    Frame times are exact multiples of the stream time base chosen in `_time_base`, so what
    the decoder reports equals what was drawn (Matroska/WebM store 1 ms ticks, so there the
    reported time is the drawn one rounded to the millisecond).
    """
    rate = Fraction(fps).limit_denominator(1001)
    count = max(1, round(duration_s * rate))
    if not vfr:
        return [float(i / rate) for i in range(count + 1)]
    # 1 ms ticks; alternate short/long intervals around the nominal one.
    nominal_ms = 1000 / float(rate)
    ticks = [0]
    for i in range(count - 1):
        ticks.append(ticks[-1] + round(nominal_ms * (0.6 if i % 2 == 0 else 1.4)))
    # Muxers size the last frame from the nominal rate whatever its packet says, so the last
    # interval is nominal: the clip then ends where every container will report it ending.
    return [t / 1000 for t in ticks] + [(ticks[-1] + nominal_ms) / 1000]


def _time_base(fps: float, vfr: bool) -> Fraction:
    return Fraction(1, 1000) if vfr else 1 / Fraction(fps).limit_denominator(1001)


def _square_position(t: float, *, width: int, height: int, side: float) -> tuple[float, float]:
    """Top-left corner of the square (pixels) at time t."""
    phase = (t / WALL_CROSSING_S) % 2.0
    x = (phase if phase <= 1.0 else 2.0 - phase) * (width - side)
    since_floor = ((t - FIRST_FLOOR_HIT_S) % FLOOR_PERIOD_S) / FLOOR_PERIOD_S
    floor_y = height - side
    apex = 0.8 * floor_y
    y = floor_y - 4.0 * since_floor * (1.0 - since_floor) * apex
    return x, y


def _coverage(start: float, size: float, length: int) -> np.ndarray:
    """Fraction of each pixel covered by [start, start+size): anti-aliasing keeps sub-pixel
    motion visible, so the analysed trajectory matches the analytic one."""
    edges = np.arange(length, dtype=np.float64)
    return np.clip(np.minimum(edges + 1, start + size) - np.maximum(edges, start), 0.0, 1.0)


def _square_frame(
    t: float, *, width: int, height: int, side: float, bg: int, fg: int
) -> np.ndarray:
    x, y = _square_position(t, width=width, height=height, side=side)
    mask = np.outer(_coverage(y, side, height), _coverage(x, side, width))
    return np.rint(bg + (fg - bg) * mask).astype(np.uint8)


def _grainy(pixels: np.ndarray, grain: float, *, seed: int) -> np.ndarray:
    if grain <= 0:
        return pixels
    noise = np.random.default_rng(seed).normal(0.0, grain, size=pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def _encode(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    times: list[float],
    fps: float,
    width: int,
    height: int,
    container: Container,
    codec: str | None,
    pix_fmt: str,
    vfr: bool,
    with_audio: bool,
) -> None:
    time_base = _time_base(fps, vfr)
    with av.open(str(path), mode="w", format=_FORMAT_FOR_CONTAINER[container]) as out:
        video = cast(
            "av.VideoStream",
            out.add_stream(
                codec or _DEFAULT_VIDEO_CODEC[container],
                rate=Fraction(fps).limit_denominator(1001),
            ),
        )
        video.width = width
        video.height = height
        video.pix_fmt = pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        # A short GOP keeps seeking cheap and exercises several keyframes in copy tests.
        video.codec_context.gop_size = 12
        video.codec_context.thread_count = 1
        name = video.codec_context.name
        if name == "libx264":
            # veryfast keeps B-frames (pts != dts), which the remux tests want to see survive.
            video.options = {"preset": "veryfast", "crf": "23"}
        elif name in ("libvpx", "libvpx-vp9"):
            video.options = {"deadline": "realtime", "cpu-used": "8"}
            video.codec_context.bit_rate = 800_000
        else:
            video.codec_context.bit_rate = 1_500_000

        audio = _add_sine_audio_stream(out, container) if with_audio else None

        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="gray")
            frame.pts = round(Fraction(times[i]).limit_denominator(1_000_000) / time_base)
            frame.time_base = time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))

        if audio is not None:
            _write_sine(out, audio, times[-1])


def _add_sine_audio_stream(
    out: av.container.OutputContainer, container: Container
) -> av.AudioStream:
    codec, sample_format = _AUDIO_CODEC[container]
    rate = 48_000 if codec == "libopus" else 44_100
    stream = cast("av.AudioStream", out.add_stream(codec, rate=rate))
    stream.layout = "stereo"
    stream.format = sample_format
    stream.codec_context.bit_rate = 96_000
    return stream


def _write_sine(
    out: av.container.OutputContainer, stream: av.AudioStream, duration_s: float
) -> None:
    rate = stream.codec_context.sample_rate
    total = round(duration_s * rate)
    chunk = stream.codec_context.frame_size or 1024
    sample_format = stream.codec_context.format.name
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (start + np.arange(n)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        planar = np.stack([tone, tone])
        if sample_format == "fltp":
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
        else:
            # Packed formats interleave L/R in a single plane.
            packed = np.ascontiguousarray(planar.T).reshape(1, -1)
            if sample_format == "s16":
                packed = np.rint(packed * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(packed, format=sample_format, layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_tone(path: Path, seconds: float, *, frequency: float = 330.0, rate: int = 44100) -> Path:
    """A mono 16-bit WAV of a sine tone, ``seconds`` long (a reference audio clip)."""
    import wave

    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path


def audio_packets(path: Path) -> list[tuple[bytes, int | None, int | None, int | None]]:
    """A file's first audio stream as its packets (bytes and timing): what a stream copy keeps."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [
            (bytes(packet), packet.pts, packet.dts, packet.duration)
            for packet in container.demux(stream)
            if packet.dts is not None
        ]
