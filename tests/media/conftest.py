"""Media fixtures: audio-only files encoded with PyAV. The video clips made once per session are
shared with the storage tests, in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import resample_poly

from tests.support.soundtrack_clips import SceneClip, make_scene_clip, speechlike_track


def write_sine(
    path: Path,
    *,
    codec: str,
    muxer: str,
    duration_s: float,
    sample_rate: int = 44_100,
    muxer_options: dict[str, str] | None = None,
    cover_art: bool = False,
) -> int:
    """Encode a mono 440 Hz sine of `duration_s`; returns the number of samples encoded."""
    total = round(duration_s * sample_rate)
    with av.open(str(path), "w", format=muxer, options=muxer_options or {}) as out:
        stream: av.AudioStream = out.add_stream(codec, rate=sample_rate, layout="mono")  # type: ignore[assignment]
        if cover_art:
            # An MP3's embedded picture: FFmpeg reads it back as an attached-picture "video".
            picture = out.add_stream("mjpeg")
            picture.width, picture.height, picture.pix_fmt = 64, 64, "yuvj420p"
            still = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            still = still.reformat(format="yuvj420p")
            still.pts = 0
            out.mux(picture.encode(still) + picture.encode(None))
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name,
            layout="mono",
            rate=sample_rate,
            frame_size=stream.codec_context.frame_size or 1024,
        )
        tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(total) / sample_rate)
        frame = av.AudioFrame.from_ndarray(
            tone.astype(np.float32)[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate = sample_rate
        frame.pts = 0
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
    return total


# --- the soundtrack tests: long clips made once per session, and what they look at ------------

KLING_LIMITS = {"min_s": 3.0, "max_s": 20.0, "overlap_s": 1.0}
# A 65 s clip: five shots, so the plan has scene cuts to choose from.
SHOTS_65S = (12.0, 17.0, 9.0, 14.0, 13.0)


@pytest.fixture(scope="session")
def scene_clip_65s(clip_dir: Path) -> SceneClip:
    return make_scene_clip(clip_dir / "scenes-65s.mp4", shots=SHOTS_65S)


@pytest.fixture(scope="session")
def dialogue_clip_30s(clip_dir: Path) -> SceneClip:
    """30 s, two shots, with a dialogue-like track at 48 kHz (what `mix` must keep)."""
    speech = speechlike_track(30.0, 48_000, seed=7)
    return make_scene_clip(clip_dir / "dialogue-30s.mp4", shots=(14.0, 16.0), audio=speech)


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of `path` as float64 (channels, frames), and its rate; decoded
    here with PyAV directly, not with the code under test."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        planar = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks = [
            out.to_ndarray()
            for frame in [*container.decode(stream), None]
            for out in planar.resample(frame)
        ]
    return np.concatenate(chunks, axis=1).astype(np.float64), rate


def true_peak_dbtp(audio: np.ndarray) -> float:
    """4x oversampled peak, with scipy's polyphase resampler: independent of app.media."""
    over = resample_poly(audio, 4, 1, axis=1)
    return float(20 * np.log10(np.abs(over).max()))


def rms_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(audio)) + 1e-20))


def onsets(audio: np.ndarray, rate: int, *, window_s: float = 0.002) -> list[float]:
    """Instants where the energy jumps: the 2 ms window energy rising 10 dB above the median
    of the 100 ms before (at most one onset per 150 ms)."""
    window = round(window_s * rate)
    frames = audio.shape[1] // window
    energy = np.square(audio[:, : frames * window]).sum(axis=0).reshape(frames, window).sum(axis=1)
    history = round(0.1 / window_s)
    before = np.median(sliding_window_view(energy[:-1], history), axis=1)
    rising = np.flatnonzero(energy[history:] > 10 * (before + 1e-12)) + history
    found: list[float] = []
    for i in rising.tolist():
        if not found or i * window_s - found[-1] >= 0.15:
            found.append(i * window_s)
    return found
