"""Read a video once, small and grey, and reduce it to what the foley renderer needs.

The recipe (docs: shared reference "A procedural foley for the emulator"): per-frame motion
energy drives a continuous layer, and impacts are peaks of the intensity centroid's
acceleration. Frames are decoded at 64x48 grey because nothing finer is used and decoding is
the dominant cost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scipy.ndimage import median_filter, percentile_filter
from scipy.signal import find_peaks

ANALYSIS_WIDTH = 64
ANALYSIS_HEIGHT = 48

# Motion is expressed per 1/24 s so the same movement reads the same at any frame rate.
_REFERENCE_FRAME_S = 1 / 24
# Impact picking works on velocity change in frame heights per second. A hit must stand
# this many times above the local noise level (the quieter quarter of nearby values: hits
# can be so frequent at low frame rates that a median would sit on them)...
_IMPACT_RATIO = 6.0
_NOISE_PERCENTILE = 25
# ...and above this absolute floor: centroid jitter from compression peaks around 0.15 at
# 30 fps, a gentle bounce is ~0.5 and the test clip's wall hits ~3.
_IMPACT_FLOOR = 0.3
_IMPACT_MIN_GAP_S = 0.1
_BASELINE_WINDOW_S = 1.0
# A hit needs something to move: frame differences below this (mean grey-level change / 255,
# i.e. a quarter of a level) are codec "pumping" at keyframes, which nudges the centroid of a
# static low-contrast scene and would otherwise read as a hit.
_MOTION_GATE = 0.001
# Contrast below this many median absolute deviations of a frame counts as its noise floor.
_NOISE_MADS = 3.0
# Frames whose mean weight (squared grey levels above their noise floor) is below this are
# too flat to have a centroid.
_MIN_CONTRAST = 0.5


class VideoDecodeError(ValueError):
    """The file is not a video PyAV/FFmpeg can decode (or holds no video frames)."""


@dataclass(frozen=True, eq=False)
class VideoAnalysis:
    """What the renderer knows about a video. Arrays are read-only; equality is identity."""

    duration_s: float
    fps: float
    width: int
    height: int
    container: str
    has_audio: bool
    mean_brightness: float
    motion_mean: float
    frame_times: np.ndarray
    motion: np.ndarray
    centroid_x: np.ndarray
    impacts_s: np.ndarray
    digest: str
    format_name: str = ""
    # Velocity change at each impact (frame heights per second): how hard the hit is.
    impact_strength: np.ndarray = field(default_factory=lambda: np.zeros(0))


def analyze_video(path: str | Path) -> VideoAnalysis:
    """Decode the first real video stream of `path` and measure it.

    Raises VideoDecodeError for files FFmpeg cannot open, still images, files without a video
    stream (cover art does not count) and streams that yield no frame.
    """
    path = Path(path)
    digest = _sha256(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(f"not a readable media file: {exc}") from exc
    with container:
        if _is_still_image(container.format.name):
            raise VideoDecodeError(f"a still image ({container.format.name}), not a video")
        stream = primary_video_stream(container)
        if stream is None:
            raise VideoDecodeError("the file has no video stream")
        stream.thread_type = "AUTO"
        # Not skip_loop_filter: the loop filter is in-loop, so skipping it makes the picture
        # drift until the next keyframe, and the snap back reads as a (false) impact.
        has_audio = bool(container.streams.audio)
        format_name = container.format.name
        brand = str(container.metadata.get("major_brand", ""))
        try:
            frames = _decode_small_grey(container, stream)
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"video stream cannot be decoded: {exc}") from exc
        width, height = stream.codec_context.width, stream.codec_context.height
        declared = _declared_duration(stream)
        average_rate = float(stream.average_rate) if stream.average_rate else 0.0

    if frames.count == 0:
        raise VideoDecodeError("the video stream holds no decodable frame")

    times = frames.times - frames.times[0]
    extent = times[-1] + frames.last_duration
    interval = float(np.median(np.diff(times))) if len(times) > 1 else frames.last_duration
    # Trust the container's figure (what probes report) unless it disagrees with the frames.
    duration = declared if declared and abs(declared - extent) <= 2 * interval + 0.05 else extent
    fps = average_rate if average_rate > 0 else len(times) / duration

    aspect = width / height if height else 1.0
    impacts, strength = _detect_impacts(
        times, frames.centroid * np.array([aspect, 1.0]), frames.motion
    )
    # The path-intersection estimate may fall a hair outside the clip at either end.
    keep = (impacts >= 0) & (impacts < duration)
    motion = frames.motion
    return VideoAnalysis(
        duration_s=float(duration),
        fps=float(fps),
        width=int(width),
        height=int(height),
        container=_normalize_container(format_name, brand, path),
        has_audio=has_audio,
        mean_brightness=float(frames.brightness),
        motion_mean=float(motion[1:].mean()) if len(motion) > 1 else 0.0,
        frame_times=_frozen(times),
        motion=_frozen(motion),
        centroid_x=_frozen(frames.centroid[:, 0]),
        impacts_s=_frozen(impacts[keep]),
        digest=digest,
        format_name=format_name,
        impact_strength=_frozen(strength[keep]),
    )


def primary_video_stream(container: av.container.Container) -> av.VideoStream | None:
    """The first real video stream: cover art in audio files (MP3, M4A) is an "attached
    picture" video stream of one frame and must not pass for a video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def describe_video(a: VideoAnalysis) -> str:
    """A deterministic one-sentence prompt, the stand-in for ThinkSound's caption."""
    if a.mean_brightness < 0.15:
        room = "a dark room"
    elif a.mean_brightness < 0.35:
        room = "a dim room"
    elif a.mean_brightness < 0.65:
        room = "a softly lit room"
    else:
        room = "a bright room"

    if a.motion_mean < 0.002:
        movement = "no motion"
    elif a.motion_mean < 0.01:
        movement = "slow motion"
    elif a.motion_mean < 0.03:
        movement = "steady motion"
    else:
        movement = "quick motion"

    rate = len(a.impacts_s) / a.duration_s if a.duration_s > 0 else 0.0
    if len(a.impacts_s) == 0:
        subject = "Quiet room tone" if movement == "no motion" else "Gentle rustling"
    else:
        hard = a.impact_strength.size > 0 and float(np.median(a.impact_strength)) >= 2.5
        hardness = "Hard" if hard else "Soft"
        if len(a.impacts_s) >= 3 and _is_regular(a.impacts_s):
            pattern = "rhythmic impacts"
        elif rate >= 2.0:
            pattern = "rapid impacts"
        else:
            pattern = "scattered impacts"
        subject = f"{hardness} {pattern}"
    return f"{subject} in {room} with {movement}."


def _detect_impacts(
    times: np.ndarray, positions: np.ndarray, motion: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Impact instants (s) and strengths from a tracked position (N x 2, frame heights).

    A hit is an abrupt velocity change: peaks of the centroid's acceleration impulse, with
    the scene's steady acceleration (gravity, a smooth pan) removed, above a local level.
    Each is then placed between frames by intersecting the straight paths before and after.
    Rising-edge frame-difference novelty fires early; this lands on the contact itself.
    """
    n = len(times)
    if n < 5:
        return np.zeros(0), np.zeros(0)
    dt = np.diff(times)
    step = float(np.median(dt))
    velocity = np.diff(positions, axis=0) / dt[:, None]  # velocity[i]: frames i..i+1
    change = np.diff(velocity, axis=0)  # change[i]: at frame i+1
    window = max(3, round(_BASELINE_WINDOW_S / step) | 1)
    steady = median_filter(change, size=(window, 1), mode="nearest")
    # A hit inside interval m blends velocity[m], splitting its impulse over change[m-1] and
    # change[m]; their sum is the whole impulse whatever the sub-frame phase.
    # across[m - 1] = velocity[m+1] - velocity[m-1] without the steady part, m = 1..n-3.
    across = np.linalg.norm((change[:-1] + change[1:]) - (steady[:-1] + steady[1:]), axis=1)
    level = percentile_filter(across, _NOISE_PERCENTILE, size=window, mode="nearest")
    threshold = np.maximum(_IMPACT_RATIO * level, _IMPACT_FLOOR)
    peaks, _ = find_peaks(
        across, height=threshold, distance=max(1, round(_IMPACT_MIN_GAP_S / step))
    )
    instants: list[float] = []
    strengths: list[float] = []
    for peak in peaks:
        interval = int(peak) + 1
        # motion[i] compares frames i-1 and i: look at the interval and its neighbours.
        if motion[interval : interval + 3].max() < _MOTION_GATE:
            continue
        instant, strength = _refine_impact(times, positions, interval, float(across[peak]))
        instants.append(instant)
        strengths.append(strength)
    order = np.argsort(instants, kind="stable")
    return np.asarray(instants)[order], np.asarray(strengths)[order]


def _refine_impact(
    times: np.ndarray, positions: np.ndarray, interval: int, fallback_strength: float
) -> tuple[float, float]:
    """Place the hit found in frame interval `interval` (or at one of its ends) in time.

    For each candidate interval, extend the path through the two frames before it and the
    two after it, and take the instant where the two lines come closest. Among candidates
    whose instant falls inside their interval, the one with the largest velocity change
    between its two paths is the hit (a candidate with both paths on the same side of the
    hit sees almost no change). That change is the strength.
    """
    best: tuple[float, float] | None = None  # strength, instant
    for m in (interval - 1, interval, interval + 1):
        a, b, c, d = m - 1, m, m + 1, m + 2
        if a < 0 or d >= len(times):
            continue
        v_in = (positions[b] - positions[a]) / (times[b] - times[a])
        v_out = (positions[d] - positions[c]) / (times[d] - times[c])
        delta = v_in - v_out
        norm = float(delta @ delta)
        if norm == 0.0:
            continue
        offset = (positions[b] - v_in * times[b]) - (positions[c] - v_out * times[c])
        instant = -float(offset @ delta) / norm
        # Curved paths (gravity) bend the straight-line estimate slightly; a hit exactly on
        # a frame can land just outside either neighbouring interval, so allow half a frame.
        slack = 0.5 * (times[c] - times[b])
        if not times[b] - slack <= instant <= times[c] + slack:
            continue
        strength = float(np.sqrt(norm))
        if best is None or strength > best[0]:
            best = (strength, instant)
    if best is None:
        return float((times[interval] + times[interval + 1]) / 2), fallback_strength
    return best[1], best[0]


@dataclass
class _SmallFrames:
    count: int
    times: np.ndarray
    last_duration: float
    motion: np.ndarray
    centroid: np.ndarray  # (N, 2), x and y in 0..1
    brightness: float


def _decode_small_grey(
    container: av.container.InputContainer, stream: av.VideoStream
) -> _SmallFrames:
    times: list[float] = []
    greys: list[np.ndarray] = []
    last_duration = 0.0
    # One reformatter for the whole stream keeps its scaler context: twice as fast as
    # frame.reformat(), which builds a new one per frame.
    scaler = VideoReformatter()
    for index, frame in enumerate(container.decode(stream)):
        t = frame.time
        if t is None:
            t = index / float(stream.average_rate or stream.guessed_rate or 25)
        if times and t <= times[-1]:
            # Duplicate or out-of-order timestamps (broken muxers): keep time strictly rising.
            continue
        small = scaler.reformat(
            frame, width=ANALYSIS_WIDTH, height=ANALYSIS_HEIGHT, format="gray", interpolation="AREA"
        )
        greys.append(small.to_ndarray())
        times.append(float(t))
        if frame.duration and frame.time_base is not None:
            last_duration = float(frame.duration * frame.time_base)
        else:
            last_duration = 0.0

    count = len(times)
    time_array = np.asarray(times, dtype=np.float64)
    if count == 0:
        return _SmallFrames(0, time_array, 0.0, np.zeros(0), np.zeros((0, 2)), 0.0)
    if last_duration <= 0.0:
        if count > 1:
            last_duration = float(np.median(np.diff(time_array)))
        else:
            last_duration = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)

    # 3 KB per frame: hold them all and compute the statistics vectorised, not per frame.
    pixels = np.stack(greys).astype(np.float32)
    per_frame = np.abs(np.diff(pixels, axis=0)).mean(axis=(1, 2)) / 255.0
    motion = np.concatenate(
        [[0.0], np.minimum(1.0, per_frame * _REFERENCE_FRAME_S / np.diff(time_array))]
    )
    return _SmallFrames(
        count=count,
        times=time_array,
        last_duration=last_duration,
        motion=motion,
        centroid=_contrast_centroids(pixels),
        brightness=float(pixels.mean()) / 255.0,
    )


def _contrast_centroids(pixels: np.ndarray) -> np.ndarray:
    """(N, 2) centroid of each frame, x and y in 0..1.

    Pixels are weighted by their contrast against the frame's median, so the centroid follows
    what stands out (a bright object on a dark ground or the reverse), not the mean level. A
    frame too flat to have a centroid keeps the previous one.
    """
    count = len(pixels)
    medians = np.median(pixels.reshape(count, -1), axis=1)
    deviation = np.abs(pixels - medians[:, None, None])
    # Soft-threshold at a few median absolute deviations: grain and compression noise spread
    # over the whole frame would otherwise drag the centroid toward the centre by an amount
    # that changes from frame to frame (keyframes keep more grain), faking accelerations.
    spread = np.median(deviation.reshape(count, -1), axis=1)
    # Squared, so strong edges and objects dominate what little noise survives.
    weights = np.square(np.maximum(deviation - _NOISE_MADS * spread[:, None, None], 0.0))
    totals = weights.sum(axis=(1, 2))
    xs = (np.arange(ANALYSIS_WIDTH) + 0.5) / ANALYSIS_WIDTH
    ys = (np.arange(ANALYSIS_HEIGHT) + 0.5) / ANALYSIS_HEIGHT
    valid = totals >= _MIN_CONTRAST * ANALYSIS_WIDTH * ANALYSIS_HEIGHT
    safe = np.where(valid, totals, 1.0)
    centroid = np.stack([weights.sum(axis=1) @ xs / safe, weights.sum(axis=2) @ ys / safe], axis=1)
    source = np.maximum.accumulate(np.where(valid, np.arange(count), -1))
    return np.where((source >= 0)[:, None], centroid[np.maximum(source, 0)], 0.5)


def _declared_duration(stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def _normalize_container(format_name: str, major_brand: str, path: Path) -> str:
    """Name the container the way people do: the demuxer's family name is ambiguous
    ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"), so look at the brand / EBML DocType."""
    if format_name.startswith("mov,"):
        brand = major_brand.strip().lower()
        if brand == "qt":
            return "mov"
        if brand.startswith("3g"):
            return "3gp"
        return "mp4"
    if format_name.startswith("matroska"):
        return "webm" if _ebml_doctype(path) == "webm" else "matroska"
    return format_name.split(",")[0]


def _ebml_doctype(path: Path) -> str | None:
    """The DocType string of a Matroska/WebM file's EBML header (FFmpeg does not expose it)."""
    with path.open("rb") as f:
        head = f.read(256)
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    at = head.find(b"\x42\x82")
    if at < 0 or at + 3 > len(head):
        return None
    first = head[at + 2]
    width = 1
    while width <= 8 and not first & (0x80 >> (width - 1)):
        width += 1
    if width > 8:
        return None
    size = first & (0xFF >> width)
    for byte in head[at + 3 : at + 2 + width]:
        size = (size << 8) | byte
    start = at + 2 + width
    return head[start : start + size].decode("ascii", "replace").lower()


def _is_still_image(format_name: str) -> bool:
    # FFmpeg reads PNG/JPEG/WebP... through image demuxers ("png_pipe", "image2"): one
    # frame, no timeline. Animated GIF has its own demuxer and stays a video.
    return format_name == "image2" or format_name.endswith("_pipe")


def _is_regular(instants: np.ndarray) -> bool:
    gaps = np.diff(instants)
    return bool(gaps.std() <= 0.15 * gaps.mean())


def _sha256(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise VideoDecodeError(f"cannot read {path.name}: {exc}") from exc


def _frozen(values: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    array.setflags(write=False)
    return array
