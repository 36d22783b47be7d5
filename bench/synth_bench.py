"""Throughput of the emulator's foley pipeline: analyse, render, mux (and the MP3 Kling adds).

Prints figures, asserts nothing. Run pinned to one core to see single-core numbers:

    taskset -c 0 .venv/bin/python bench/synth_bench.py

The real-time factor is seconds of video processed per second of wall time; the target for
analyse + render + mux is >= 20x on one core.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emulator.synth import (  # noqa: E402
    analyze_video,
    encode_audio,
    mux_audio_into_video,
    render_audio,
)
from tests.support.clips import make_bouncing_square  # noqa: E402

SAMPLE_RATE = 44_100
T = TypeVar("T")


@dataclass(frozen=True)
class _Timing:
    best: float  # the least disturbed run: what the code costs
    median: float  # what a busy machine gives


def _timed(runs: int, work: Callable[[], T]) -> tuple[_Timing, T]:
    """Wall time of `runs` calls, after one warm-up call that is not counted."""
    result = work()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        samples.append(time.perf_counter() - start)
    return _Timing(min(samples), statistics.median(samples)), result


def _bench_clip(label: str, path: Path, args: argparse.Namespace, grain: float) -> None:
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
    analyse_s, analysis = _timed(args.runs, lambda: analyze_video(clip.path))
    render_s, pcm = _timed(args.runs, lambda: render_audio(analysis, sample_rate=SAMPLE_RATE))
    mux_s, _ = _timed(args.runs, lambda: mux_audio_into_video(clip.path, pcm, SAMPLE_RATE, out_mp4))
    mp3_s, _ = _timed(args.runs, lambda: encode_audio(pcm, SAMPLE_RATE, out_mp3, "mp3"))

    duration = clip.duration_s
    pipeline = _Timing(
        analyse_s.best + render_s.best + mux_s.best,
        analyse_s.median + render_s.median + mux_s.median,
    )
    kling = _Timing(pipeline.best + mp3_s.best, pipeline.median + mp3_s.median)
    rows = [
        ("analyze_video", analyse_s),
        ("render_audio", render_s),
        ("mux_audio_into_video", mux_s),
        ("analyse+render+mux", pipeline),
        ("encode_audio mp3", mp3_s),
        ("... + mp3 (Kling)", kling),
    ]
    print(f"  {'stage':<22}{'best s':>8}{'median s':>10}{'x RT best':>11}{'x RT median':>13}")
    for name, t in rows:
        print(
            f"  {name:<22}{t.best:>8.3f}{t.median:>10.3f}"
            f"{duration / t.best:>11.1f}{duration / t.median:>13.1f}"
        )
    print(f"  impacts found: {len(analysis.impacts_s)} of {len(clip.impact_times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=24)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--grain",
        type=float,
        default=4.0,
        help="film grain (grey levels) of the second clip; the clean clip is nearly free to "
        "decode, grain 4 gives a real-footage bitrate (~0.9 Mbit/s at 360p)",
    )
    args = parser.parse_args()

    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) == 1:
        # The process cannot see how it was launched; a one-core affinity means taskset.
        command = f"taskset -c {cores[0]} {command}"
    print(f"command: {command}   (CPU affinity: {cores or 'unknown'})")

    with tempfile.TemporaryDirectory() as tmp:
        _bench_clip("clean clip", Path(tmp) / "clean.mp4", args, grain=0.0)
        _bench_clip(
            f"grainy clip (grain {args.grain:g})", Path(tmp) / "grain.mp4", args, args.grain
        )


if __name__ == "__main__":
    main()
