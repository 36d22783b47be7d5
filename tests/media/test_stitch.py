"""Stitching the segments' audio: equal-power crossfades, no gap, no click, in sync.

The segments' "generated" audio is synthesized here with known content (tests.support.
soundtrack_clips.impulse_track: a hit at each of the clip's impacts over a noise bed, a
different noise per segment, as two model runs would differ), so where every sound must land is
known to the sample.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from app.media import AudioMode, Segment, SegmentAudio, SegmentPlanError, build_soundtrack, probe
from app.media.pcm import PcmFormat
from app.media.segments import plan_segments
from app.media.stitch import crossfades, stitch_blocks
from tests.media.conftest import KLING_LIMITS, decode_audio, onsets, rms_db
from tests.support.soundtrack_clips import SceneClip, impulse_track, write_audio

RATE = 48_000
PCM = PcmFormat(RATE, 2)


def segment_outputs(
    directory: Path, plan: list[Segment], impacts: list[float], *, bed_db: float = -42.0
) -> list[SegmentAudio]:
    """What the model would return for each segment, as Kling's MP3s: the impacts inside the
    segment, on a noise bed of its own."""
    tracks = []
    for i, segment in enumerate(plan):
        inside = [t - segment.start_s for t in impacts if segment.start_s <= t < segment.end_s]
        audio = impulse_track(segment.duration_s, RATE, inside, seed=i, bed_db=bed_db)
        path = write_audio(directory / f"segment-{i}.mp3", audio, RATE, codec="libmp3lame",
                           muxer="mp3")  # fmt: skip
        tracks.append(SegmentAudio(segment, path))
    return tracks


def test_crossfade_gains_keep_the_power_and_hand_over_smoothly() -> None:
    plan = [Segment(0.0, 10.5), Segment(9.5, 20.0)]
    fades = crossfades(plan, total=20 * RATE, rate=RATE, crossfade_s=0.5)

    first, second = fades[0].gains(0, 20 * RATE), fades[1].gains(0, 20 * RATE)
    # Only inside the segments, and 0.5 s centred on 10 s.
    assert (first[: round(9.75 * RATE)] == 1).all() and (first[round(10.25 * RATE) :] == 0).all()
    assert (second[: round(9.75 * RATE)] == 0).all() and (second[round(10.25 * RATE) :] == 1).all()
    np.testing.assert_allclose(first**2 + second**2, 1.0, atol=1e-6)
    # Smooth: no step bigger than a sample of a quarter sine over 0.5 s.
    assert np.abs(np.diff(first)).max() < 1e-4 and np.abs(np.diff(second)).max() < 1e-4


@pytest.mark.parametrize(
    "plan",
    [
        [Segment(0.5, 10.0)],
        [Segment(0.0, 10.0), Segment(10.0, 20.0)],
        [Segment(0.0, 10.0), Segment(9.5, 19.0)],
    ],
    ids=["late start", "no overlap", "short end"],
)
def test_segments_that_leave_a_hole_are_refused(plan: list[Segment]) -> None:
    with pytest.raises(SegmentPlanError):
        crossfades(plan, total=round((plan[-1].end_s if len(plan) > 1 else 10) * RATE) + RATE,
                   rate=RATE, crossfade_s=0.5)  # fmt: skip


def test_stitched_noise_has_no_dip_bump_or_click_at_the_handovers(tmp_path: Path) -> None:
    plan = [Segment(0.0, 10.5), Segment(9.5, 20.5), Segment(19.5, 30.0)]
    tracks = []
    for i, segment in enumerate(plan):
        noise = np.random.default_rng(i).standard_normal((2, round(segment.duration_s * RATE)))
        path = tmp_path / f"noise-{i}.wav"
        write_audio(path, 0.1 * noise, RATE, codec="pcm_f32le", muxer="wav")
        tracks.append(SegmentAudio(segment, path))

    stitched = np.concatenate(list(stitch_blocks(tracks, duration_s=30.0, pcm=PCM)), axis=1)

    assert stitched.shape == (2, 30 * RATE)
    for boundary in (10.0, 20.0):
        # RMS over 50 ms windows from 0.5 s before to 0.5 s after: within 1 dB of the level.
        windows = [stitched[:, round(t * RATE) : round((t + 0.05) * RATE)]
                   for t in np.arange(boundary - 0.5, boundary + 0.5, 0.05)]  # fmt: skip
        levels = np.array([rms_db(w) for w in windows])
        assert np.abs(levels - rms_db(0.1 * np.ones(1))).max() < 1.0
    # No sample-to-sample jump beyond what the noise itself has.
    assert np.abs(np.diff(stitched, axis=1)).max() < 1.2 * 0.1 * 2 * 5.5


def test_a_65s_clip_comes_back_65s_long_with_its_hits_on_the_impacts(
    tmp_path: Path, scene_clip_65s: SceneClip
) -> None:
    plan = plan_segments(scene_clip_65s.path, **KLING_LIMITS)
    tracks = segment_outputs(tmp_path, plan, scene_clip_65s.impacts)
    out = tmp_path / "out.mp4"

    result = build_soundtrack(scene_clip_65s.path, tracks, out, mode=AudioMode.REPLACE)

    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert info.duration_s == pytest.approx(65.0)
    assert info.audio.duration_s == pytest.approx(65.0, abs=1e-3)
    assert result.duration_s == 65.0
    # The video is the original's, packet for packet.
    with av.open(str(out)) as made, av.open(str(scene_clip_65s.path)) as original:
        assert [bytes(p) for p in made.demux(video=0) if p.size] == [
            bytes(p) for p in original.demux(video=0) if p.size
        ]
    audio, rate = decode_audio(out)
    found = onsets(audio, rate)
    impacts = scene_clip_65s.impacts
    assert len(found) == len(impacts)
    # Every hit within 5 ms of its impact (the onset detector's 2 ms windows, MP3 then AAC).
    assert np.abs(np.array(found) - np.array(impacts)).max() < 0.005
    # The bed runs on without a gap through every handover: no 50 ms window near silence.
    for a, b in itertools.pairwise(plan):
        middle = (a.end_s + b.start_s) / 2
        for t in np.arange(middle - 0.5, middle + 0.5, 0.05):
            window = audio[:, round(t * rate) : round((t + 0.05) * rate)]
            assert rms_db(window) > result.gain_db - 42 - 3 - 3  # type: ignore[operator]
