"""Split a video longer than a model allows into segments the model accepts.

`plan_segments()` cuts where the picture cuts (scene changes, found by `detect_scene_cuts()`),
and evenly where there are none, with a short overlap between neighbours so the generated tracks
can be crossfaded (`app.media.stitch`). The pure planner, `plan_from_cuts()`, needs only numbers.

What the planner optimises, in this order: the fewest segments (each one is a paid upstream
request), then the most boundaries on scene cuts (a sound change there is expected), then pieces
of even length. Boundaries are then moved out to keyframes where that keeps every limit, so the
segment's video can be stream-copied for upload (`app.media.cutting`).
"""

from __future__ import annotations

import itertools
import math
import os
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from app.media.errors import MediaUnreadableError, SegmentPlanError, VideoTooLongError
from app.media.probe import open_input, primary_stream, probe

# The longest video the gateway splits (a documented limit: 10 minutes). A parameter of
# plan_segments(); the job layer may pass its own.
MAX_TOTAL_S = 600.0
# Scene-cut detection works on tiny grey frames: a cut changes the whole picture, so 64x36 shows
# it, and scaling costs next to nothing once the frame is decoded.
ANALYSIS_SIZE = (64, 36)
_HISTOGRAM_BINS = 16
# A cut: the grey histograms of two consecutive frames share less than this much (0.5 = half
# the pixels moved to other brightness bins)...
CUT_THRESHOLD = 0.4
# ...and the change stands this many times above the median change around it, so a fast pan or
# a flash of noise does not count.
_CUT_CONTRAST = 4.0
_CONTEXT_FRAMES = 12
# Keyframes further than this from a planned boundary are not worth a longer segment.
KEYFRAME_SNAP_S = 1.0


@dataclass(frozen=True, order=True)
class Segment:
    """A stretch of the video, in seconds of its timeline: [start_s, end_s)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, float]:
        return {"start_s": self.start_s, "end_s": self.end_s}


def plan_segments(
    video_path: str | os.PathLike[str],
    *,
    min_s: float,
    max_s: float,
    overlap_s: float,
    max_total_s: float = MAX_TOTAL_S,
) -> list[Segment]:
    """Segments of the video at `video_path`, each `min_s`..`max_s` long, neighbours overlapping
    by `overlap_s` (or more, where a keyframe allowed a stream copy), together covering the whole
    video stream. A video no longer than `max_s` is one segment.

    Raises `VideoTooLongError` past `max_total_s`, `SegmentPlanError` when the video is shorter
    than `min_s` or the limits leave no plan, `MediaUnreadableError` for an unreadable file.
    """
    duration = _video_duration(video_path)
    _check_limits(duration, min_s=min_s, max_s=max_s, overlap_s=overlap_s, max_total_s=max_total_s)
    if duration <= max_s:
        return [Segment(0.0, duration)]
    cuts = detect_scene_cuts(video_path)
    planned = plan_from_cuts(
        duration, cuts, min_s=min_s, max_s=max_s, overlap_s=overlap_s, max_total_s=max_total_s
    )
    return snap_to_keyframes(planned, keyframe_times(video_path), duration=duration, max_s=max_s)


def plan_from_cuts(
    duration_s: float,
    cuts: Sequence[float],
    *,
    min_s: float,
    max_s: float,
    overlap_s: float,
    max_total_s: float = MAX_TOTAL_S,
) -> list[Segment]:
    """The plan for a video of `duration_s` with scene cuts at `cuts` (seconds), see the module
    docstring. Pieces between boundaries are at least max(min_s, overlap_s) and at most
    max_s - overlap_s long; a segment is its piece plus half the overlap on each inner side."""
    _check_limits(
        duration_s, min_s=min_s, max_s=max_s, overlap_s=overlap_s, max_total_s=max_total_s
    )
    if duration_s <= max_s:
        return [Segment(0.0, duration_s)]
    shortest, longest = max(min_s, overlap_s), max_s - overlap_s
    nodes = [0.0, *sorted(c for c in cuts if shortest <= c <= duration_s - shortest), duration_s]
    # best[j]: (segments, boundaries off a cut, sum of squared piece lengths), and where from.
    best: list[tuple[float, float, float] | None] = [None] * len(nodes)
    came_from = [0] * len(nodes)
    best[0] = (0, 0, 0.0)
    for j in range(1, len(nodes)):
        for i in range(j):
            gap, reached = nodes[j] - nodes[i], best[i]
            if reached is None or gap < shortest:
                continue
            pieces = math.ceil(gap / longest - 1e-9)
            segments, off_cut, squares = reached
            cost = (segments + pieces, off_cut + pieces - 1, squares + pieces * (gap / pieces) ** 2)
            current = best[j]
            if current is None or cost < current:
                best[j], came_from[j] = cost, i
    if best[-1] is None:
        raise SegmentPlanError(f"no plan of {min_s}-{max_s} s segments fits {duration_s:.2f} s")
    chosen = [len(nodes) - 1]
    while chosen[-1]:
        chosen.append(came_from[chosen[-1]])
    boundaries: list[float] = []
    for a, b in zip(chosen[:0:-1], chosen[-2::-1], strict=True):
        pieces = math.ceil((nodes[b] - nodes[a]) / longest - 1e-9)
        boundaries.extend(nodes[a] + (nodes[b] - nodes[a]) * k / pieces for k in range(pieces))
    boundaries.append(duration_s)
    half = overlap_s / 2
    return [
        Segment(round(max(0.0, a - half), 6), round(min(duration_s, b + half), 6))
        for a, b in itertools.pairwise(boundaries)
    ]


def snap_to_keyframes(
    segments: Sequence[Segment], keyframes: Sequence[float], *, duration: float, max_s: float
) -> list[Segment]:
    """Each segment widened to start on the keyframe at or before its start and to end on the
    keyframe at or after its end (or the video's end), when both are within `KEYFRAME_SNAP_S`
    and the result is still at most `max_s` long: such a segment is a run of whole GOPs, which
    `cut_segment()` can stream-copy. Widening only grows the overlaps, so coverage is kept."""
    snapped = []
    for segment in segments:
        start = _keyframe_at_or_before(keyframes, segment.start_s)
        end = (
            duration
            if segment.end_s >= duration
            else _keyframe_at_or_after(keyframes, segment.end_s)
        )
        if (
            start is not None
            and end is not None
            and segment.start_s - start <= KEYFRAME_SNAP_S
            and end - segment.end_s <= KEYFRAME_SNAP_S
            and end - start <= max_s
        ):
            snapped.append(Segment(round(start, 6), round(end, 6)))
        else:
            snapped.append(segment)
    return snapped


def detect_scene_cuts(video_path: str | os.PathLike[str]) -> list[float]:
    """Instants (seconds, the first frame of the new shot) where the picture cuts.

    Every frame is decoded (FFmpeg's own threads), shrunk to `ANALYSIS_SIZE` grey and reduced to
    a brightness histogram; only the previous histogram is kept, so memory does not grow with the
    video. A cut is a histogram change above `CUT_THRESHOLD` that stands out from the changes
    around it (see `find_cuts`)."""
    times, changes = [], []
    scaler = VideoReformatter()
    previous: np.ndarray | None = None
    width, height = ANALYSIS_SIZE
    try:
        with open_input(video_path) as container:
            stream = primary_stream(container, "video")
            if stream is None:
                raise MediaUnreadableError("the file has no video stream")
            stream.thread_type = "AUTO"
            # On the video's own timeline (0 = its first frame), as segments are.
            start_s = float((stream.start_time or 0) * stream.time_base)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                grey = scaler.reformat(frame, width=width, height=height, format="gray")
                pixels = np.asarray(grey.to_ndarray(), dtype=np.uint8).ravel()
                counts = np.bincount(pixels >> 4, minlength=_HISTOGRAM_BINS)
                histogram = counts / counts.sum()
                if previous is not None:
                    times.append(float(frame.time) - start_s)
                    changes.append(0.5 * float(np.abs(histogram - previous).sum()))
                previous = histogram
    except av.FFmpegError as exc:
        raise MediaUnreadableError(f"cannot decode the video: {exc}") from exc
    return find_cuts(np.asarray(times), np.asarray(changes))


def find_cuts(times: np.ndarray, changes: np.ndarray) -> list[float]:
    """The instants among `times` whose histogram `changes` (0..1, against the previous frame)
    are a cut: above `CUT_THRESHOLD`, the largest within `_CONTEXT_FRAMES` either side, and
    `_CUT_CONTRAST` times the median change around them."""
    cuts = []
    for i, change in enumerate(changes):
        if change < CUT_THRESHOLD:
            continue
        around = changes[max(0, i - _CONTEXT_FRAMES) : i + _CONTEXT_FRAMES + 1]
        if change < around.max():
            continue
        if change >= _CUT_CONTRAST * float(np.median(around)):
            cuts.append(round(float(times[i]), 6))
    return cuts


def keyframe_times(video_path: str | os.PathLike[str]) -> list[float]:
    """Presentation times of the video stream's keyframes, read from the packets (no decode)."""
    with open_input(video_path) as container:
        stream = primary_stream(container, "video")
        if stream is None:
            raise MediaUnreadableError("the file has no video stream")
        start = stream.start_time or 0
        return sorted(
            float((packet.pts - start) * stream.time_base)
            for packet in container.demux(stream)
            if packet.is_keyframe and packet.pts is not None
        )


def _video_duration(video_path: str | os.PathLike[str]) -> float:
    info = probe(Path(video_path))
    if info.video is None or not info.video.duration_s:
        raise MediaUnreadableError("the file has no video stream with a duration")
    return info.video.duration_s


def _check_limits(
    duration: float, *, min_s: float, max_s: float, overlap_s: float, max_total_s: float
) -> None:
    if not 0 < min_s <= max_s or overlap_s < 0:
        raise ValueError("need 0 < min_s <= max_s and overlap_s >= 0")
    if max_s - overlap_s < 2 * max(min_s, overlap_s):
        # Below this, some lengths between two and three pieces cannot be split at all.
        raise ValueError("max_s must leave room for two pieces of max(min_s, overlap_s) + overlap")
    if duration > max_total_s:
        raise VideoTooLongError(
            f"the video is {duration:.1f} s long; at most {max_total_s:g} s can be split"
        )
    if duration < min_s:
        raise SegmentPlanError(f"the video is {duration:.2f} s long, shorter than {min_s:g} s")


def _keyframe_at_or_before(keyframes: Sequence[float], t: float) -> float | None:
    i = bisect_right(keyframes, t + 1e-6)
    return keyframes[i - 1] if i else None


def _keyframe_at_or_after(keyframes: Sequence[float], t: float) -> float | None:
    i = bisect_left(keyframes, t - 1e-6)
    return keyframes[i] if i < len(keyframes) else None
