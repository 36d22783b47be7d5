"""Join the segments' generated audio into one track exactly as long as the video.

Each segment's audio is laid at its segment's start and lasts exactly its segment (cut, or
completed with silence after a short fade). Where two segments overlap, an **equal-power
crossfade** of `crossfade_s` (at most the overlap), centred in the overlap, hands over from one
to the next: gains cos(πu/2) and sin(πu/2), whose squares sum to 1, so two unrelated sounds keep
their combined power through the fade (no dip, no bump), and both gains are smooth, so no click.
Outside the crossfade only one segment sounds.

`stitch_blocks()` is a generator of one-second blocks: at most two decoders are open at once
and nothing of a track is held beyond the block being made.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.media.errors import SegmentPlanError
from app.media.pcm import AudioReader, PcmFormat
from app.media.segments import Segment

# The default handover between two segments' audio: long enough that a change of timbre between
# two model runs is heard as a blend, short enough that both runs' sounds stay in sync with the
# picture (a foley hit lasts ~100 ms).
DEFAULT_CROSSFADE_S = 0.5


@dataclass(frozen=True)
class SegmentAudio:
    """A segment and the file holding its generated audio (a model's output: a video with sound
    or an audio file); the audio's instant 0 is the segment's start."""

    segment: Segment
    path: Path


@dataclass(frozen=True)
class Fades:
    """Where a segment's gain rises from 0 to 1 and falls back, in frames of the timeline:
    [fade_in_start, fade_in_end) rising, [fade_out_start, fade_out_end) falling; 1 between,
    0 outside. A segment at the start (end) of the video has an empty fade in (out)."""

    start: int
    end: int
    fade_in_start: int
    fade_in_end: int
    fade_out_start: int
    fade_out_end: int

    def gains(self, first: int, count: int) -> np.ndarray:
        """The gain of this segment at timeline frames [first, first + count)."""
        gain = np.ones(count, np.float32)
        # Only the frames inside a fade cost a sine; most blocks have none.
        for begin, end, shape in (
            (self.fade_in_start, self.fade_in_end, np.sin),
            (self.fade_out_start, self.fade_out_end, np.cos),
        ):
            low, high = _clip(begin - first, count), _clip(end - first, count)
            if high > low:
                at = np.arange(first + low, first + high, dtype=np.float64)
                gain[low:high] = shape(np.pi / 2 * _progress(at, begin, end))
        gain[: _clip(self.fade_in_start - first, count)] = 0.0
        gain[_clip(self.fade_out_end - first, count) :] = 0.0
        return gain


def crossfades(
    segments: Sequence[Segment], *, total: int, rate: int, crossfade_s: float
) -> list[Fades]:
    """The fades of each segment (in order of start) over a timeline of `total` frames.

    Raises `SegmentPlanError` when the segments leave a gap, do not start at 0 or do not reach
    the end: the stitched track would have a hole."""
    if not segments:
        raise SegmentPlanError("no segments to stitch")
    bounds = [(round(s.start_s * rate), min(total, round(s.end_s * rate))) for s in segments]
    if bounds[0][0] > 0 or bounds[-1][1] < total:
        raise SegmentPlanError("the segments do not cover the whole video")
    # Each handover: a window of the crossfade length, centred in the overlap.
    handovers = []
    for (_, end), (start, _) in itertools.pairwise(bounds):
        if start >= end:
            raise SegmentPlanError("two neighbouring segments do not overlap")
        length = min(end - start, round(crossfade_s * rate))
        middle = (start + end) // 2
        handovers.append((middle - length // 2, middle - length // 2 + length))
    fades = []
    for i, (start, end) in enumerate(bounds):
        rise = handovers[i - 1] if i else (start, start)
        fall = handovers[i] if i < len(handovers) else (end, end)
        fades.append(Fades(start, end, *rise, *fall))
    return fades


def stitch_blocks(
    tracks: Sequence[SegmentAudio],
    *,
    duration_s: float,
    pcm: PcmFormat,
    crossfade_s: float = DEFAULT_CROSSFADE_S,
) -> Iterator[np.ndarray]:
    """The stitched track, `round(duration_s * pcm.rate)` frames in blocks of `pcm.block`."""
    ordered = sorted(tracks, key=lambda t: t.segment)
    total = pcm.frames(duration_s)
    fades = crossfades(
        [t.segment for t in ordered], total=total, rate=pcm.rate, crossfade_s=crossfade_s
    )
    readers: dict[int, AudioReader] = {}
    try:
        for first in range(0, total, pcm.block):
            count = min(pcm.block, total - first)
            block = pcm.silence(count)
            for i, fade in enumerate(fades):
                # Only the part of the segment that sounds: from its fade in to its fade out.
                low, high = max(first, fade.fade_in_start), min(first + count, fade.fade_out_end)
                if low >= high:
                    if i in readers and first >= fade.fade_out_end:
                        readers.pop(i).close()
                    continue
                if i not in readers:
                    readers[i] = AudioReader(ordered[i].path, pcm)
                    readers[i].skip(low - fade.start)
                samples = readers[i].read(high - low)
                gains = fade.gains(low, high - low)
                block[:, low - first : high - first] += (
                    samples if gains.min() == 1 else samples * gains
                )
            yield block
    finally:
        for reader in readers.values():
            reader.close()


def _progress(at: np.ndarray, begin: int, end: int) -> np.ndarray:
    """0 at `begin` rising to 1 at `end` (the centre of each frame)."""
    return (at - begin + 0.5) / (end - begin)


def _clip(index: int, count: int) -> int:
    return min(max(index, 0), count)
