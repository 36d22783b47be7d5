"""Soundtrack benchmark: CPU per second of video of the long-video steps (plan, stitch, mix,
loudness, encode) and the peak extra memory of a whole `build_soundtrack` run, on a 60 s and a
10-minute clip. Prints figures, asserts nothing.

    .venv/bin/python bench/soundtrack_bench.py                     # 60 s and 10 min, ~5 min
    .venv/bin/python bench/soundtrack_bench.py --durations 60      # quicker
    .venv/bin/python bench/soundtrack_bench.py --plan-video my.mp4 # scene detection on real video

The inputs are `tests.support.soundtrack_run.long_inputs`: a 160x120 5 fps clip with shots of
60 s and a dialogue track, and one generated WAV per Kling-sized segment (20 s, 1 s overlap);
made once and cached in the out directory. CPU is user + system time of this process (FFmpeg's
threads included), the least of `--runs` runs; a step's cost is the difference between runs with
and without it (tests.support.soundtrack_run.step_cpu). Memory: each whole run in a fresh
interpreter, VmHWM (reset through clear_refs) minus the RSS right before it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from harness import report
from harness.run import Run, parse, parser

VERSIONS = ("av", "numpy", "scipy", "pyloudnorm")
# The budgets.
CPU_BUDGET_PER_VIDEO_S = 0.05
MEMORY_BUDGET_MIB = 100


def best_of(runs: int, work: Callable[[], Any]) -> float:
    from tests.support.soundtrack_run import cpu_of

    return min(cpu_of(work) for _ in range(runs))


def encode_cpu(inputs: Any, fmt: Any, runs: int, stitch_s: float) -> float:
    """CPU of encoding the stitched track to `fmt` alone: (stitch + encode) - stitch."""
    from app.media.encode import write_audio_file
    from app.media.pcm import PcmFormat
    from app.media.stitch import stitch_blocks

    pcm = PcmFormat()
    out = inputs.clip.path.with_name(f"bench-encode.{fmt.value}")

    def blocks() -> Iterable[Any]:
        return stitch_blocks(inputs.tracks, duration_s=inputs.clip.duration_s, pcm=pcm)

    spent = best_of(runs, lambda: write_audio_file(blocks(), out, fmt=fmt, pcm=pcm))
    out.unlink(missing_ok=True)
    return spent - stitch_s


def bench_duration(args: Any, run: Run, duration: float) -> None:
    from app.media import AudioFormat, AudioMode, plan_segments
    from tests.support.soundtrack_run import KLING, long_inputs, measure_in_child, step_cpu

    inputs = long_inputs(args.out_dir / "inputs", duration)
    clip = inputs.clip
    print(
        f"\n== {duration:g} s: {clip.path.name}, 160x120 {clip.fps} fps H.264 + AAC dialogue, "
        f"{len(inputs.tracks)} segments of generated 48 kHz stereo WAV"
    )
    steps = [step_cpu(inputs) for _ in range(args.runs)]
    best = {name: min(s[name] for s in steps) for name in steps[0]}
    plan = best_of(args.runs, lambda: plan_segments(clip.path, **KLING))
    table = report.Table(
        ("step", "<34"), ("CPU s", "8.3f"), ("CPU s / video s", "15.4f"), ("budget", "<18")
    )
    table.row("plan_segments (decode, cuts, plan)", plan, plan / duration, "")
    for name in ("stitch", "mix", "loudness"):
        table.row(name, best[name], best[name] / duration, "")
    total = sum(best.values())
    verdict = "ok" if total / duration <= CPU_BUDGET_PER_VIDEO_S else "OVER"
    table.row("stitch + mix + loudness", total, total / duration, f"<= 0.05: {verdict}")
    for fmt in AudioFormat:
        spent = encode_cpu(inputs, fmt, args.runs, best["stitch"])
        table.row(f"encode {fmt.value}", spent, spent / duration, "")
    print(
        "   (loudness: K-weighting, 4x true peak, plan, apply; encode: 48 kHz stereo, the "
        "audio file alone)"
    )

    memory = report.Table(
        ("whole build_soundtrack, fresh process", "<40"),
        *(("peak extra MiB", "14.1f"), ("CPU s", "7.2f"), ("wall s", "7.2f"), ("budget", "<16")),
    )
    for mode, fmt in (
        (AudioMode.MIX, AudioFormat.AAC),
        (AudioMode.REPLACE, AudioFormat.AAC),
        (AudioMode.GENERATED_ONLY, AudioFormat.FLAC),
    ):
        suffix = ".flac" if mode is AudioMode.GENERATED_ONLY else ".mp4"
        out = run.tmp / f"out-{duration:g}-{mode.value}{suffix}"
        measured = measure_in_child(inputs, out, mode=mode, audio_format=fmt)
        mib = measured["peak_extra_mib"]
        verdict = "ok" if mib <= MEMORY_BUDGET_MIB else "OVER"
        memory.row(
            f"{mode.value} {fmt.value}", mib, measured["cpu_s"], measured["wall_s"],
            f"<= {MEMORY_BUDGET_MIB}: {verdict}",
        )  # fmt: skip
        out.unlink(missing_ok=True)


def bench_plan_video(args: Any, run: Run) -> None:
    from app.media import Segment, cut_segment, probe
    from app.media.segments import detect_scene_cuts, keyframe_times

    path = args.plan_video
    info = probe(path)
    duration = info.duration_s or 0.0
    video = info.video
    print(f"\n== scene detection on {path.name}: {duration:.1f} s")
    if video:
        print(f"   {video.codec} {video.width}x{video.height} {video.fps} fps")
    detect = best_of(args.runs, lambda: detect_scene_cuts(path))
    keys = best_of(args.runs, lambda: keyframe_times(path))
    table = report.Table(("step", "<24"), ("CPU s", "8.3f"), ("CPU s / video s", "15.4f"))
    table.row("detect_scene_cuts", detect, detect / duration)
    table.row("keyframe_times", keys, keys / duration)
    # 10 s from the first keyframe at or after 1 s to the keyframe 10 s on, if there is one.
    frames = keyframe_times(path)
    start = next((k for k in frames if k >= 1.0), 0.0)
    end = next((k for k in frames if k >= start + 10.0), None)
    out = run.tmp / "cut.mp4"
    for label, segment in (
        ("cut_segment, copy", Segment(start, end) if end else None),
        ("cut_segment, re-encode", Segment(start + 0.05, min(duration, start + 10.05))),
    ):
        if segment is None:
            continue
        spent = best_of(args.runs, functools.partial(cut_segment, path, segment, out))
        method = cut_segment(path, segment, out).method.value
        table.row(f"{label}", spent, spent / segment.duration_s)
        table.note(f"{method}: {segment.duration_s:.2f} s; per second of the segment")
    print(f"   cuts found: {detect_scene_cuts(path)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("soundtrack_bench", __doc__)
    p.add_argument(
        "--durations", default="60,600", help="clip lengths, seconds; '' for none [60,600]"
    )
    p.add_argument("--runs", type=int, default=2, help="runs per step; the least CPU counts [2]")
    p.add_argument("--plan-video", type=Path, help="also time scene detection on this video")
    args = parse(p, argv)
    with Run("soundtrack_bench", args, versions=VERSIONS) as run:
        for duration in (float(d) for d in args.durations.split(",") if d):
            bench_duration(args, run, duration)
        if args.plan_video:
            bench_plan_video(args, run)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
