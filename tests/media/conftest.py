"""Media fixtures: audio-only files encoded with PyAV. The video clips made once per session are
shared with the storage tests, in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


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
