"""Synthesis benchmark: throughput of the emulator's foley pipeline: analyse, render, mux (and
the MP3 Kling adds). Run pinned to one core to see single-core numbers:

    taskset -c 0 .venv/bin/python bench/synth_bench.py

The real-time factor is seconds of video processed per second of wall time; the target for
analyse + render + mux is >= 20x on one core. This one measures the emulator's own code, so it
imports `emulator.synth`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from harness import report
from harness.run import Run, parse, parser

SAMPLE_RATE = 44_100
T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    best: float  # the least disturbed run: what the code costs
    median: float  # what a busy machine gives

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.best + other.best, self.median + other.median)


def timed(runs: int, work: Callable[[], T]) -> tuple[Timing, T]:
    """Wall time of `runs` calls, after one warm-up call that is not counted."""
    result = work()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        samples.append(time.perf_counter() - start)
    return Timing(min(samples), statistics.median(samples)), result


def bench_clip(label: str, path: Path, args: argparse.Namespace, grain: float) -> None:
    from emulator.synth import analyze_video, encode_audio, mux_audio_into_video, render_audio
    from tests.support.clips import make_bouncing_square

    start = time.perf_counter()
    clip = make_bouncing_square(
        path,
        duration_s=args.duration,
        fps=args.fps,
        width=args.width,
        height=args.height,
        grain=grain,
    )
    generated = time.perf_counter() - start
    size_mb = clip.path.stat().st_size / 1e6
    print(
        f"\n{label}: {clip.duration_s:.2f} s {clip.width}x{clip.height} @ {clip.fps:g} fps "
        f"H.264, {size_mb:.2f} MB = {size_mb * 8 / clip.duration_s:.2f} Mbit/s "
        f"(generated in {generated:.2f} s)"
    )
    out_mp4, out_mp3 = path.with_suffix(".out.mp4"), path.with_suffix(".out.mp3")
    runs = args.runs
    analyse, analysis = timed(runs, lambda: analyze_video(clip.path))
    render, pcm = timed(runs, lambda: render_audio(analysis, sample_rate=SAMPLE_RATE))
    mux, _ = timed(runs, lambda: mux_audio_into_video(clip.path, pcm, SAMPLE_RATE, out_mp4))
    mp3, _ = timed(runs, lambda: encode_audio(pcm, SAMPLE_RATE, out_mp3, "mp3"))
    pipeline = analyse + render + mux
    table = report.Table(
        *(("stage", "<22"), ("best s", "8.3f"), ("median s", "8.3f")),
        *(("x RT best", "9.1f"), ("x RT median", "11.1f")),
    )
    for name, t in (
        ("analyze_video", analyse),
        ("render_audio", render),
        ("mux_audio_into_video", mux),
        ("analyse+render+mux", pipeline),
        ("encode_audio mp3", mp3),
        ("... + mp3 (Kling)", pipeline + mp3),
    ):
        table.row(name, t.best, t.median, clip.duration_s / t.best, clip.duration_s / t.median)
    print(f"   impacts found: {len(analysis.impacts_s)} of {len(clip.impact_times)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("synth_bench", __doc__)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=24)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument(
        "--grain",
        type=float,
        default=4.0,
        help="film grain (grey levels) of the second clip; the clean clip is nearly free to "
        "decode, grain 4 gives a real-footage bitrate (~0.9 Mbit/s at 360p)",
    )
    args = parse(p, argv)
    with Run("synth_bench", args, versions=("av", "numpy", "scipy")) as run:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        # The process cannot see how it was launched; a one-core affinity means taskset.
        print(f"affinity  {cores or 'unknown'}" + (" (pinned)" if len(cores) == 1 else ""))
        bench_clip("clean clip", run.tmp / "clean.mp4", args, grain=0.0)
        bench_clip(f"grainy clip (grain {args.grain:g})", run.tmp / "grain.mp4", args, args.grain)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
