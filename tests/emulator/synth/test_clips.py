"""The test-clip generator itself: the ground truth other tests rely on must hold."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.clips import bouncing_square_impacts, make_bouncing_square, make_static_clip


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clip-generator")


def test_impacts_are_exact_well_separated_and_inside_the_clip() -> None:
    impacts = bouncing_square_impacts(4.0)

    assert impacts == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6])
    assert min(np.diff(impacts)) >= 0.4 - 1e-9
    assert all(0 < t < 4.0 for t in impacts)


@pytest.mark.parametrize("container", ["mp4", "mov", "webm", "mkv", "avi"])
def test_decoded_frames_match_the_declared_timeline(out: Path, container: str) -> None:
    clip = make_bouncing_square(out / f"timeline.{container}", container=container)  # type: ignore[arg-type]

    with av.open(str(clip.path)) as f:
        times = [frame.time for frame in f.decode(video=0)]

    # Matroska stores 1 ms timestamps: the drawn instant is exact, the stored one rounded.
    tolerance = 5e-4 if container in ("webm", "mkv") else 1e-6
    assert times == pytest.approx(clip.frame_times, abs=tolerance + 1e-9)
    assert len(times) == 96
    assert clip.duration_s == pytest.approx(4.0)


@pytest.mark.parametrize("container", ["mp4", "mov", "webm", "mkv", "avi"])
def test_with_audio_adds_one_audio_stream(out: Path, container: str) -> None:
    clip = make_bouncing_square(
        out / f"audio.{container}",
        container=container,  # type: ignore[arg-type]
        with_audio=True,
        duration_s=1.0,
    )

    with av.open(str(clip.path)) as f:
        assert len(f.streams.audio) == 1
        assert len(f.streams.video) == 1
        assert sum(frame.samples for frame in f.decode(audio=0)) > 0


def test_generation_is_byte_for_byte_deterministic(out: Path) -> None:
    first = make_bouncing_square(out / "a.mp4", with_audio=True).path.read_bytes()
    second = make_bouncing_square(out / "b.mp4", with_audio=True).path.read_bytes()

    assert first == second


def test_h264_clip_has_b_frames_and_short_gop(out: Path) -> None:
    clip = make_bouncing_square(out / "gop.mp4")

    with av.open(str(clip.path)) as f:
        packets = [p for p in f.demux(video=0) if p.size]
    keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]

    assert any(p.pts != p.dts for p in packets)  # reordering: remux must keep pts and dts
    assert max(np.diff(keyframes)) <= 12


def test_static_clip_does_not_change(out: Path) -> None:
    clip = make_static_clip(out / "still.mp4", brightness=200)

    with av.open(str(clip.path)) as f:
        frames = [frame.to_ndarray(format="gray").astype(int) for frame in f.decode(video=0)]

    assert clip.impact_times == []
    assert max(np.abs(frame - frames[0]).mean() for frame in frames) < 0.5
    assert 180 < np.mean(frames[0]) < 220
