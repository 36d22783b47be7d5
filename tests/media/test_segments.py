"""Segment planning (pure, and on real clips with scene cuts) and cutting a segment for upload."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.media import (
    Segment,
    SegmentPlanError,
    VideoTooLongError,
    cut_segment,
    plan_segments,
    probe,
)
from app.media.cutting import CutMethod
from app.media.segments import detect_scene_cuts, keyframe_times, plan_from_cuts
from tests.media.conftest import KLING_LIMITS
from tests.support.clips import Clip
from tests.support.soundtrack_clips import SceneClip, make_scene_clip


def assert_valid_plan(
    plan: list[Segment], duration: float, *, min_s: float, max_s: float, overlap_s: float
) -> None:
    assert plan[0].start_s == 0.0
    assert plan[-1].end_s == pytest.approx(duration)
    for segment in plan:
        assert min_s - 1e-6 <= segment.duration_s <= max_s + 1e-6
    for before, after in itertools.pairwise(plan):
        assert before.start_s < after.start_s
        assert before.end_s - after.start_s >= overlap_s - 1e-6


def test_a_video_within_the_limit_is_one_segment() -> None:
    assert plan_from_cuts(18.0, [5.0], **KLING_LIMITS) == [Segment(0.0, 18.0)]


def test_without_cuts_a_65s_video_is_split_evenly_into_the_fewest_segments() -> None:
    plan = plan_from_cuts(65.0, [], **KLING_LIMITS)

    # Pieces of at most 19 s (20 s less the overlap): 4 of 16.25 s.
    assert len(plan) == 4
    assert_valid_plan(plan, 65.0, **KLING_LIMITS)
    assert [s.start_s for s in plan] == [0.0, 15.75, 32.0, 48.25]


def test_boundaries_fall_on_scene_cuts_where_the_count_allows() -> None:
    plan = plan_from_cuts(65.0, [12.0, 29.0, 38.0, 52.0], **KLING_LIMITS)

    assert len(plan) == 4
    boundaries = [(a.end_s + b.start_s) / 2 for a, b in itertools.pairwise(plan)]
    # 12 and 29 are cuts; 38 and 52 cannot both be used without a fifth segment.
    assert boundaries[:2] == [12.0, 29.0]
    assert_valid_plan(plan, 65.0, **KLING_LIMITS)


@settings(max_examples=200, deadline=None)
@given(
    duration=st.floats(3.0, 600.0),
    cut_fractions=st.lists(st.floats(0.0, 1.0), max_size=30),
    limits=st.sampled_from(
        [
            {"min_s": 3.0, "max_s": 20.0, "overlap_s": 1.0},  # Kling
            {"min_s": 1.0, "max_s": 15.0, "overlap_s": 0.5},  # Hunyuan
            {"min_s": 1.0, "max_s": 30.0, "overlap_s": 2.0},  # MMAudio
        ]
    ),
)
def test_every_plan_covers_the_video_within_the_limits(
    duration: float, cut_fractions: list[float], limits: dict[str, float]
) -> None:
    cuts = [f * duration for f in cut_fractions]

    plan = plan_from_cuts(duration, cuts, **limits)

    assert_valid_plan(plan, duration, **limits)
    # Never more requests than an even split needs.
    longest = limits["max_s"] - limits["overlap_s"]
    assert len(plan) <= max(1, math.ceil(duration / longest))


def test_too_long_and_too_short_videos_are_refused() -> None:
    with pytest.raises(VideoTooLongError):
        plan_from_cuts(601.0, [], **KLING_LIMITS, max_total_s=600.0)
    with pytest.raises(SegmentPlanError):
        plan_from_cuts(2.0, [], **KLING_LIMITS)


def test_scene_cuts_are_found_on_the_first_frame_of_each_shot(scene_clip_65s: SceneClip) -> None:
    assert detect_scene_cuts(scene_clip_65s.path) == scene_clip_65s.cuts


def test_motion_alone_is_not_a_scene_cut(mp4_without_audio: Clip) -> None:
    # The bouncing square moves fast and hits walls: no cut.
    assert detect_scene_cuts(mp4_without_audio.path) == []


def test_a_65s_clip_is_planned_at_its_cuts_and_on_keyframes(scene_clip_65s: SceneClip) -> None:
    plan = plan_segments(scene_clip_65s.path, **KLING_LIMITS)

    assert_valid_plan(plan, 65.0, **KLING_LIMITS)
    assert len(plan) == 4
    overlaps = [(b.start_s, a.end_s) for a, b in itertools.pairwise(plan)]
    # The handovers at the cuts 12 and 29 (overlaps widened onto keyframes may be off-centre).
    assert overlaps[0][0] <= 12.0 <= overlaps[0][1]
    assert overlaps[1][0] <= 29.0 <= overlaps[1][1]
    keyframes = keyframe_times(scene_clip_65s.path)
    # Where a keyframe was near enough, the segment was widened onto it.
    assert any(s.start_s in keyframes and s.end_s in [*keyframes, 65.0] for s in plan)


def test_planning_refuses_a_video_past_the_maximum(scene_clip_65s: SceneClip) -> None:
    with pytest.raises(VideoTooLongError):
        plan_segments(scene_clip_65s.path, **KLING_LIMITS, max_total_s=60.0)


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_a_segment_of_whole_gops_is_stream_copied(tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "gops.mp4", shots=(12.0,), gop=20)
    segment = Segment(4.0, 10.0)  # keyframes every 2 s

    cut = cut_segment(clip.path, segment, tmp_path / "cut.mp4")

    assert cut.method is CutMethod.COPY
    source = video_packets(clip.path)
    assert video_packets(cut.path) == source[40:100]
    info = probe(cut.path)
    assert info.duration_s == pytest.approx(6.0)
    assert not info.has_audio


def test_a_segment_inside_a_gop_is_reencoded_to_its_exact_frames(tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "gops.mp4", shots=(12.0,), gop=20)
    segment = Segment(3.5, 9.3)

    cut = cut_segment(clip.path, segment, tmp_path / "cut.mp4", max_height=60)

    assert cut.method is CutMethod.REENCODE
    info = probe(cut.path)
    assert info.video is not None
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 80, 60)
    assert info.duration_s == pytest.approx(5.8, abs=0.01)
    with av.open(str(cut.path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 58
