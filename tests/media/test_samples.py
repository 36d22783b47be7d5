from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from app.media import ensure_sample_video, probe
from app.media.samples import SAMPLE_IMPACT_TIMES_S


def test_sample_video_is_a_decodable_4s_h264_clip(tmp_path: Path) -> None:
    path = ensure_sample_video(tmp_path)

    info = probe(path)
    assert (info.container, info.has_audio) == ("mp4", False)
    assert info.video is not None
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 320, 240)
    assert info.video.fps == pytest.approx(24.0)
    assert info.duration_s == pytest.approx(4.0)
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(frames) == 96


def test_sample_ball_is_lowest_at_its_impacts(tmp_path: Path) -> None:
    with av.open(str(ensure_sample_video(tmp_path))) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    # The ball is the only near-white thing; its centre's row grows as it falls.
    rows = np.array([np.argwhere(frame > 200)[:, 0].mean() for frame in frames])
    lowest = [
        i for i in range(1, len(rows) - 1) if rows[i] >= rows[i - 1] and rows[i] > rows[i + 1]
    ]

    assert [i / 24 for i in lowest] == list(SAMPLE_IMPACT_TIMES_S)


def test_sample_video_is_written_once(tmp_path: Path) -> None:
    first = ensure_sample_video(tmp_path)
    written = first.stat().st_mtime_ns

    second = ensure_sample_video(tmp_path)

    assert second == first
    assert second.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_sample_video_is_deterministic(tmp_path: Path) -> None:
    a = ensure_sample_video(tmp_path / "a")
    b = ensure_sample_video(tmp_path / "b")

    assert a.read_bytes() == b.read_bytes()
