"""Cut a segment's video out of the whole, for upload to the model.

Two ways, chosen per segment:

* **stream copy** when the segment is a run of whole GOPs: it starts on a keyframe and ends on
  the next GOP's keyframe (or the video's end), and the codec fits an MP4. The packets go out
  untouched, so it costs a read of the file and the model sees the very pictures of the
  original. `plan_segments()` moves boundaries onto keyframes where it can, for this.
* **re-encode** otherwise: the frames from the keyframe before the start are decoded, the ones
  inside [start, end) scaled to at most `max_height` lines and encoded with x264 `veryfast` at
  CRF 20. Copying from an arbitrary instant would need the frames before it (an edit list to
  hide them is not something every model's reader honours), so a mid-GOP cut is re-encoded.
  The model only needs to see the motion, and the gateway muxes the final sound onto the
  original video, not onto this copy, so a 720p upload loses nothing and encodes fast.

The audio is left out: the model makes its own, and the upload is smaller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from app.media.encode import replaced_path
from app.media.errors import MediaError, MediaUnreadableError
from app.media.probe import open_input, primary_stream
from app.media.segments import Segment, keyframe_times

DEFAULT_MAX_HEIGHT = 720
# x264: veryfast is ~3x faster than its default (medium) for a few % more bits at the same
# quality; CRF 20 is visually clean, which is all a model's motion analysis needs.
_X264_OPTIONS = {"preset": "veryfast", "crf": "20"}
# Two instants this close are the same frame boundary (timestamps are rounded to the time base).
_SAME_INSTANT_S = 0.002


class CutMethod(StrEnum):
    COPY = "copy"
    REENCODE = "reencode"


@dataclass(frozen=True)
class SegmentCut:
    path: Path
    segment: Segment
    method: CutMethod


def cut_segment(
    video_path: str | os.PathLike[str],
    segment: Segment,
    out_path: str | os.PathLike[str],
    *,
    max_height: int = DEFAULT_MAX_HEIGHT,
) -> SegmentCut:
    """Write `segment` of the video at `video_path` as a video-only MP4 at `out_path` (written
    beside it and renamed), starting at 0. See the module docstring for copy or re-encode."""
    out_path = Path(out_path)
    with replaced_path(out_path) as tmp:
        if _copyable(video_path, segment):
            _copy(video_path, segment, tmp)
            method = CutMethod.COPY
        else:
            _reencode(video_path, segment, tmp, max_height=max_height)
            method = CutMethod.REENCODE
    return SegmentCut(out_path, segment, method)


def _copyable(video_path: str | os.PathLike[str], segment: Segment) -> bool:
    with open_input(video_path) as container:
        stream = primary_stream(container, "video")
        if stream is None:
            raise MediaUnreadableError("the file has no video stream")
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        codec = stream.codec_context.name
    if codec not in ("h264", "hevc", "av1", "vp9", "mpeg4"):
        return False
    keyframes = keyframe_times(video_path)
    starts_on_key = any(abs(k - segment.start_s) <= _SAME_INSTANT_S for k in keyframes)
    ends_on_key = (duration is not None and segment.end_s >= duration - _SAME_INSTANT_S) or any(
        abs(k - segment.end_s) <= _SAME_INSTANT_S for k in keyframes
    )
    return starts_on_key and ends_on_key


def _copy(video_path: str | os.PathLike[str], segment: Segment, tmp: Path) -> None:
    with open_input(video_path) as source:
        stream = primary_stream(source, "video")
        base = stream.start_time or 0
        first = base + round(Fraction(segment.start_s) / stream.time_base)
        last = base + round(Fraction(segment.end_s) / stream.time_base)
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as target:
            try:
                out = target.add_stream_from_template(stream)
            except ValueError as exc:
                raise MediaError(f"the video stream cannot be copied: {exc}") from exc
            for packet in source.demux(stream):
                if packet.size == 0 or packet.pts is None or not first <= packet.pts < last:
                    continue
                packet.pts -= first
                packet.dts = None if packet.dts is None else packet.dts - first
                packet.stream = out
                target.mux(packet)


def _reencode(
    video_path: str | os.PathLike[str], segment: Segment, tmp: Path, *, max_height: int
) -> None:
    with open_input(video_path) as source:
        stream: Any = primary_stream(source, "video")
        stream.thread_type = "AUTO"
        base = stream.start_time or 0
        start = base + round(Fraction(segment.start_s) / stream.time_base)
        source.seek(start, stream=stream, backward=True, any_frame=False)
        width, height = _scaled(stream.codec_context.width, stream.codec_context.height, max_height)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as target:
            out: Any = target.add_stream("libx264", rate=rate, options=_X264_OPTIONS)
            out.width, out.height, out.pix_fmt = width, height, "yuv420p"
            out.time_base = stream.time_base
            out.codec_context.time_base = stream.time_base
            for frame in source.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                t = frame.time - float(base * stream.time_base)
                if t < segment.start_s - _SAME_INSTANT_S:
                    continue
                if t >= segment.end_s - _SAME_INSTANT_S:
                    break
                picture = frame.reformat(width=width, height=height, format="yuv420p")
                picture.pts = frame.pts - start
                picture.time_base = stream.time_base
                target.mux(out.encode(picture))
            target.mux(out.encode(None))


def _scaled(width: int, height: int, max_height: int) -> tuple[int, int]:
    """The size at most `max_height` lines high, aspect kept, both even (yuv420p)."""
    if height > max_height:
        width, height = round(width * max_height / height), max_height
    return width - width % 2, height - height % 2
