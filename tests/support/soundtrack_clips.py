"""Clips and sounds with a known truth, for the soundtrack tests (segments, stitching, mixing).

* `make_scene_clip`: the bouncing square of `tests.support.clips`, its trajectory continuous
  across shots, but every shot in other grey levels (a dark room, then a bright one ...): the
  picture cuts at known instants while the impacts stay `bouncing_square_impacts()`. Small
  and at a low frame rate, a 10-minute clip encodes in a few seconds.
* `impulse_track`: what a foley model would return for a segment: a quiet noise bed with a
  sharp hit at each impact.
* `speechlike_track`: a stand-in for dialogue (no espeak-ng needed): voiced "syllables" (a
  150 Hz harmonic tone under a syllable envelope) in phrases separated by pauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from scipy.signal import butter, sosfilt

from tests.support.clips import _square_frame, bouncing_square_impacts

# Grey levels (background, square) of successive shots: far apart in brightness, so a cut
# moves most pixels to other histogram bins.
SHOT_LOOKS: tuple[tuple[int, int], ...] = ((24, 230), (200, 40), (110, 250), (60, 160))


def _band_limit(rate: int) -> np.ndarray:
    return np.asarray(butter(6, min(12_000, 0.45 * rate), fs=rate, output="sos"))


@dataclass(frozen=True)
class SceneClip:
    path: Path
    duration_s: float
    fps: int
    cuts: list[float]  # the first instant of every shot but the first
    impacts: list[float]
    audio: np.ndarray | None  # (channels, frames) at audio_rate, the track muxed in
    audio_rate: int


def make_scene_clip(
    path: Path,
    *,
    shots: Sequence[float],
    fps: int = 10,
    width: int = 160,
    height: int = 120,
    gop: int = 20,
    audio: np.ndarray | None = None,
    audio_rate: int = 48_000,
) -> SceneClip:
    """An H.264 MP4 of consecutive shots of the given lengths (seconds, whole frames), with
    `audio` (channels, frames) as an AAC track when given, repeated to the clip's length. A
    keyframe every `gop` frames (ultrafast has no scene-cut keyframes)."""
    frames_per_shot = [round(s * fps) for s in shots]
    total = sum(frames_per_shot)
    shot_of_frame = [i for i, n in enumerate(frames_per_shot) for _ in range(n)]
    looks = [SHOT_LOOKS[i % len(SHOT_LOOKS)] for i in shot_of_frame]
    side = max(2.0, height / 8)
    with av.open(str(path), "w", format="mp4") as out:
        video: Any = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop
        video.codec_context.thread_count = 1
        video.options = {"preset": "ultrafast", "crf": "28"}
        # Every stream is added before the first packet (the header is written then).
        sound = _add_aac(out, audio.shape[0], audio_rate) if audio is not None else None
        for index in range(total):
            bg, fg = looks[index]
            pixels = _square_frame(index / fps, width=width, height=height, side=side, bg=bg, fg=fg)
            frame = av.VideoFrame.from_ndarray(pixels, format="gray")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None and audio is not None:
            _encode(out, sound, audio, audio_rate, frames=round(total / fps * audio_rate))
    cuts = list(np.cumsum(frames_per_shot)[:-1] / fps)
    duration = total / fps
    return SceneClip(
        path, duration, fps, [float(c) for c in cuts], bouncing_square_impacts(duration), audio,
        audio_rate,
    )  # fmt: skip


def write_audio(path: Path, samples: np.ndarray, rate: int, *, codec: str, muxer: str) -> Path:
    """`samples` (channels, frames) encoded as an audio file (e.g. libmp3lame / mp3, as Kling
    returns; LAME at its fastest setting, which halves the tests' encoding time)."""
    with av.open(str(path), "w", format=muxer) as out:
        layout = "stereo" if samples.shape[0] == 2 else "mono"
        options = {"compression_level": "9"} if codec == "libmp3lame" else {}
        stream: Any = out.add_stream(codec, rate=rate, layout=layout, options=options)
        stream.codec_context.bit_rate = 192_000
        _encode(out, stream, samples, rate)
    return path


def impulse_track(
    duration_s: float, rate: int, impacts: Sequence[float], *, seed: int, bed_db: float = -42.0
) -> np.ndarray:
    """Stereo: a noise bed at `bed_db` RMS and, at each impact (seconds from the start), a hit:
    a 2 ms attack then a 30 ms decay of noise at about -6 dBFS peak. Band-limited to 12 kHz,
    as generated sound is (models work at 16-44.1 kHz, Kling returns MP3): full-band noise
    would lose a decibel of loudness to any lossy encoder's low-pass."""
    rng = np.random.default_rng(seed)
    frames = round(duration_s * rate)
    track = rng.standard_normal((2, frames)) * 10 ** (bed_db / 20)
    length = round(0.12 * rate)
    t = np.arange(length) / rate
    envelope = np.minimum(t / 0.002, 1.0) * np.exp(-t / 0.030)
    for impact in impacts:
        at = round(impact * rate)
        if 0 <= at < frames:
            n = min(length, frames - at)
            hit = 0.25 * rng.standard_normal((2, n)) * envelope[:n]
            track[:, at : at + n] += hit
    return sosfilt(_band_limit(rate), track, axis=1).astype(np.float32)


def speechlike_track(duration_s: float, rate: int, *, seed: int) -> np.ndarray:
    """Stereo (the same in both channels): phrases of 3-6 syllables (~0.2 s each, a 150 Hz
    buzz with harmonics, -12 dBFS peak) separated by 0.4-1.2 s pauses."""
    rng = np.random.default_rng(seed)
    frames = round(duration_s * rate)
    out = np.zeros(frames)
    at = round(0.3 * rate)
    while at < frames:
        for _ in range(int(rng.integers(3, 7))):
            length = round(rng.uniform(0.15, 0.28) * rate)
            n = min(length, frames - at)
            if n <= 0:
                break
            t = np.arange(n) / rate
            pitch = 150 * rng.uniform(0.85, 1.2)
            voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8))
            out[at : at + n] += 0.12 * voice * np.sin(np.pi * np.arange(n) / length) ** 2
            at += length + round(0.03 * rate)
        at += round(rng.uniform(0.4, 1.2) * rate)
    return np.stack([out, out]).astype(np.float32)


def _add_aac(out: Any, channels: int, rate: int) -> Any:
    # FFmpeg's fast AAC coder at 64 kbps per channel: 2.5x cheaper than its default at 192 kbps,
    # which is what made 10 minutes of test clip expensive; the track is a fixture, not a figure.
    layout = "stereo" if channels == 2 else "mono"
    stream: Any = out.add_stream("aac", rate=rate, layout=layout, options={"aac_coder": "fast"})
    stream.codec_context.bit_rate = 64_000 * channels
    return stream


def _encode(
    out: Any, stream: Any, samples: np.ndarray, rate: int, *, frames: int | None = None
) -> None:
    """`samples` encoded, repeated to `frames` (default: once), a second at a time."""
    layout = stream.codec_context.layout.name
    resampler = av.AudioResampler(
        format=stream.codec_context.format.name,
        layout=layout,
        rate=rate,
        frame_size=stream.codec_context.frame_size or 4096,
    )
    length = samples.shape[1]
    total = length if frames is None else frames
    for start in range(0, total, rate):
        count = min(rate, total - start)
        where = (start + np.arange(count)) % length
        chunk = np.ascontiguousarray(samples[:, where], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = start
        for piece in resampler.resample(frame):
            out.mux(stream.encode(piece))
    for piece in resampler.resample(None):
        out.mux(stream.encode(piece))
    out.mux(stream.encode(None))
