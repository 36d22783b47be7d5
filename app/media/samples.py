"""A demo video for the zero-config start, generated rather than shipped in the repository."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import av
import numpy as np

# Bump the version in the name whenever the picture changes, so old copies are not reused.
SAMPLE_VIDEO_NAME = "sample-bouncing-ball-v1.mp4"
SAMPLE_DURATION_S = 4.0
SAMPLE_FPS = 24
SAMPLE_WIDTH, SAMPLE_HEIGHT = 320, 240
# The ball lands on the floor at these times (seconds): something for a foley model to hit.
SAMPLE_IMPACT_TIMES_S = (0.5, 1.5, 2.5, 3.5)

_BOUNCE_PERIOD_S = 1.0
_RADIUS = 16
_FLOOR_Y = 200
_BOUNCE_HEIGHT = 130


def ensure_sample_video(directory: Path) -> Path:
    """Return the path of the demo clip in `directory`, writing it first if it is not there.

    The clip: 4 s, 320x240, 24 fps, H.264/yuv420p MP4 without audio, a ball bouncing across the
    frame and landing at `SAMPLE_IMPACT_TIMES_S`. Its frames are a pure function of the frame
    index and x264 runs single-threaded, so the file is the same on every run with the same
    FFmpeg build. It is written beside its final name and renamed into place, so two processes
    starting at once at worst both write it, and nobody reads half a file. Takes ~0.2 s.
    """
    directory = Path(directory)
    path = directory / SAMPLE_VIDEO_NAME
    if path.is_file() and path.stat().st_size > 0:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    tmp_path = directory / f".{SAMPLE_VIDEO_NAME}.{uuid.uuid4().hex}.tmp"
    try:
        _write_clip(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _write_clip(path: Path) -> None:
    frame_count = round(SAMPLE_DURATION_S * SAMPLE_FPS)
    # faststart puts the index first, so a player (or fal) can start before the whole download.
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        # Single-threaded, plain C x264: with threads its output depends on the thread count,
        # and with its SIMD code the first encode in a process was measured to differ from the
        # next ones (x264 core 165). At 96 small frames, C code costs nothing worth keeping.
        options = {"crf": "28", "preset": "veryfast", "x264-params": "asm=0"}
        stream = container.add_stream("libx264", rate=SAMPLE_FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = SAMPLE_WIDTH, SAMPLE_HEIGHT, "yuv420p"
        stream.codec_context.thread_count = 1
        for index in range(frame_count):
            frame = av.VideoFrame.from_ndarray(_draw(index / SAMPLE_FPS), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _draw(t: float) -> np.ndarray:
    """The picture at time `t`: a grey room, a floor, a white ball."""
    image = np.empty((SAMPLE_HEIGHT, SAMPLE_WIDTH, 3), dtype=np.uint8)
    image[:] = (40, 44, 52)
    image[_FLOOR_Y + _RADIUS :] = (90, 80, 70)
    # Height above the floor: a parabola per period, touching the floor mid-period.
    phase = (t / _BOUNCE_PERIOD_S + 0.5) % 1.0
    height = _BOUNCE_HEIGHT * 4 * phase * (1 - phase)
    cy = _FLOOR_Y - height
    # Left to right and back once over the clip.
    span = SAMPLE_WIDTH - 4 * _RADIUS
    cx = 2 * _RADIUS + span * (1 - abs(1 - 2 * t / SAMPLE_DURATION_S))
    yy, xx = np.ogrid[:SAMPLE_HEIGHT, :SAMPLE_WIDTH]
    ball = (xx - cx) ** 2 + (yy - cy) ** 2 <= _RADIUS**2
    image[ball] = (235, 235, 235)
    return image
