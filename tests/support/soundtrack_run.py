"""Long soundtrack runs, for the resource test and bench/soundtrack_bench.py: inputs made once
and cached in a directory, the CPU of each step, and the peak memory of a whole run measured in
a fresh process.

    python -m tests.support.soundtrack_run '{"video": ..., "tracks": [...], "out": ..., ...}'

prints one JSON line: the extra peak RSS (VmHWM, reset through /proc/self/clear_refs, minus the
RSS right before the run) and the CPU seconds of the run.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.media import AudioFormat, AudioMode, PcmFormat, Segment, SegmentAudio, build_soundtrack
from app.media.loudness import LoudnessMeter, LoudnessTarget, plan_gain
from app.media.mixing import MixSettings, mix_blocks
from app.media.pcm import track_blocks
from app.media.segments import plan_from_cuts
from app.media.stitch import stitch_blocks
from tests.support.clips import bouncing_square_impacts
from tests.support.soundtrack_clips import (
    SceneClip,
    impulse_track,
    make_scene_clip,
    speechlike_track,
    write_audio,
)

KLING = {"min_s": 3.0, "max_s": 20.0, "overlap_s": 1.0}
RATE = 48_000
DIALOGUE_RATE = 24_000


@dataclass(frozen=True)
class LongInputs:
    clip: SceneClip
    tracks: list[SegmentAudio]


def long_inputs(directory: Path, duration_s: float, *, fps: int = 5) -> LongInputs:
    """A clip of `duration_s` (160x120, shots of 60 s, a mono 24 kHz dialogue track: a
    quarter of the AAC encoding time of 48 kHz stereo, and the gateway resamples it to 48 kHz
    stereo as it would a phone's track) and the generated sound of each Kling-sized segment
    (16-bit WAVs with hits on the impacts), made once."""
    directory.mkdir(parents=True, exist_ok=True)
    shots = [60.0] * int(duration_s // 60) + ([duration_s % 60] if duration_s % 60 else [])
    speech = speechlike_track(30.0, DIALOGUE_RATE, seed=5)[:1]
    clip_path = directory / f"clip-{duration_s:g}s.mp4"
    made = directory / f"clip-{duration_s:g}s.done"
    if made.exists():
        cuts = [float(c) for c in np.cumsum(shots)[:-1]]
        impacts = bouncing_square_impacts(duration_s)
        clip = SceneClip(clip_path, duration_s, fps, cuts, impacts, speech, DIALOGUE_RATE)
    else:
        clip = make_scene_clip(
            clip_path, shots=shots, fps=fps, audio=speech, audio_rate=DIALOGUE_RATE
        )
    plan = plan_from_cuts(duration_s, clip.cuts, **KLING)
    tracks = []
    for i, segment in enumerate(plan):
        path = directory / f"segment-{duration_s:g}s-{i}.wav"
        if not made.exists():
            inside = [
                t - segment.start_s for t in clip.impacts if segment.start_s <= t < segment.end_s
            ]
            audio = impulse_track(segment.duration_s, RATE, inside, seed=i, bed_db=-30)
            write_audio(path, audio, RATE, codec="pcm_s16le", muxer="wav")
        tracks.append(SegmentAudio(segment, path))
    made.touch()
    return LongInputs(clip, tracks)


def cpu_of(work: Callable[[], object]) -> float:
    """CPU seconds (user + system, all threads) of `work()`."""
    before = _cpu()
    work()
    return _cpu() - before


def step_cpu(inputs: LongInputs, pcm: PcmFormat = PcmFormat()) -> dict[str, float]:
    """CPU seconds of the steps of pass 1 and the gain, each run over the whole clip:
    stitching; stitching + mixing; stitching + mixing + loudness (measure, plan, apply). The
    cost of a step is the difference between the runs that have it and the ones that don't."""
    frames = pcm.frames(inputs.clip.duration_s)

    def stitched() -> Iterable[np.ndarray]:
        return stitch_blocks(inputs.tracks, duration_s=inputs.clip.duration_s, pcm=pcm)

    def mixed() -> Iterable[np.ndarray]:
        original = track_blocks(inputs.clip.path, pcm, frames=frames)
        return mix_blocks(original, stitched(), pcm=pcm, settings=MixSettings())

    def normalized() -> None:
        meter = LoudnessMeter(pcm)
        for block in mixed():
            meter.push(block)
        plan = plan_gain(meter.result(), LoudnessTarget())
        first = 0
        for block in mixed():  # stands in for reading the spool back
            plan.apply(block, first)
            first += block.shape[1]

    stitch = cpu_of(lambda: _drain(stitched()))
    stitch_mix = cpu_of(lambda: _drain(mixed()))
    everything = cpu_of(normalized)
    # `normalized` runs stitch + mix twice (once to measure, once standing in for the spool).
    return {
        "stitch": stitch,
        "mix": stitch_mix - stitch,
        "loudness": everything - 2 * stitch_mix,
    }


def measure_in_child(
    inputs: LongInputs, out: Path, *, mode: AudioMode, audio_format: AudioFormat
) -> dict[str, Any]:
    """`build_soundtrack` in a fresh interpreter: {"peak_extra_mib", "cpu_s", "wall_s"}."""
    job = {
        "video": str(inputs.clip.path),
        "tracks": [[t.segment.start_s, t.segment.end_s, str(t.path)] for t in inputs.tracks],
        "out": str(out),
        "mode": mode.value,
        "format": audio_format.value,
    }
    done = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "tests.support.soundtrack_run", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _drain(blocks: Iterable[np.ndarray]) -> None:
    for _ in blocks:
        pass


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _main(job: dict[str, Any]) -> None:
    tracks = [SegmentAudio(Segment(a, b), Path(p)) for a, b, p in job["tracks"]]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = _status("VmRSS")
    cpu, wall = _cpu(), time.perf_counter()
    build_soundtrack(
        job["video"],
        tracks,
        job["out"],
        mode=AudioMode(job["mode"]),
        audio_format=AudioFormat(job["format"]),
    )
    print(
        json.dumps(
            {
                "peak_extra_mib": (_status("VmHWM") - base) / 1024,
                "cpu_s": _cpu() - cpu,
                "wall_s": time.perf_counter() - wall,
            }
        )
    )


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
