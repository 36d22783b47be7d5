"""Long videos through the gateway: a 60 s video through Kling (split into segments, each a
request of its own, run side by side, stitched) against one 20 s video (one request).

    .venv/bin/python bench/long_video_bench.py                  # 3 runs, 10 s of compute each
    .venv/bin/python bench/long_video_bench.py --runs 5 --run-time 20

One API process, one worker, the fal emulator making real sound from the picture (not its fast
mode), each request given `--run-time` seconds of simulated compute (Kling takes tens of seconds
at fal) and enough account slots for every segment at once. Each run times, POST to
`succeeded` as the client sees it, a 20 s clip, then a 60 s clip (five shots: the plan has scene
cuts to choose from); the 60 s job's events split its time into phases: accept → split
(fetch, plan, cut, store), split → last segment's end (the segments at fal, in parallel), →
succeeded (the sounds fetched from storage, stitched, normalized, muxed). Target: the 60 s
video in at most 1.5x the time of the 20 s one.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.fal import start_emulator
from harness.gateway import Api, gateway_env, job_ended, start_worker
from harness.procs import BenchError
from harness.report import Table
from harness.run import Run, parse, parser

KLING = "kling-video-to-audio"


def _args(argv: list[str] | None) -> Any:
    p = parser("long_video_bench", __doc__)
    g = p.add_argument_group("long_video_bench")
    g.add_argument("--runs", type=int, default=3, help="runs of each clip [3]")
    g.add_argument(
        "--run-time", type=float, default=10.0, help="simulated compute per request, s [10]"
    )
    return parse(p, argv)


def _run(client: httpx.Client, url: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    r = client.post("/v1/jobs", json={"model": KLING, "input": {"video_url": url}})
    if r.status_code != 202:
        raise BenchError(f"POST /v1/jobs: {r.status_code} {r.text}")
    done = job_ended(client, r.json()["id"], within_s=600, look_s=0.05)
    took = time.monotonic() - started
    if done["status"] != "succeeded":
        raise BenchError(f"job {done['id']}: {done['status']} {done['error']}")
    return took, done


def _phases(client: httpx.Client, job: dict[str, Any]) -> tuple[float, float, float]:
    """Seconds from accept to split, split to the last segment's end, that to succeeded."""
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    at = {e["type"]: datetime.fromisoformat(e["created_at"]) for e in events}
    created, split, done = at["job.created"], at["job.split"], at["job.succeeded"]
    ends = [
        datetime.fromisoformat(client.get(f"/v1/jobs/{s['job_id']}").json()["completed_at"])
        for s in job["segments"]
    ]
    last = max(ends)
    return (
        (split - created).total_seconds(),
        (last - split).total_seconds(),
        (done - last).total_seconds(),
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    with Run("long_video_bench", args, versions=("uvicorn", "asyncpg", "av")) as run:
        from tests.support.soundtrack_clips import make_scene_clip

        db = run.database()
        emu = start_emulator(
            run.procs, run.tmp / "emulator", fast=False, concurrency=16, run_time_s=args.run_time
        )
        env = gateway_env(db, run.tmp / "data", emu)
        api = Api(run.procs, env, run.out_dir).start(args.server_core)
        start_worker(run.procs, env, run.out_dir / "worker.log", FOLEY_FAL_CONCURRENCY="16")
        tenant = api.new_tenant("bench")
        short = make_scene_clip(run.tmp / "clip-20s.mp4", shots=(20.0,), fps=24, gop=48)
        long = make_scene_clip(
            run.tmp / "clip-60s.mp4", shots=(11.0, 16.0, 9.0, 14.0, 10.0), fps=24, gop=48
        )
        urls = {
            "20 s": emu.upload(short.path, "video/mp4"),
            "60 s": emu.upload(long.path, "video/mp4"),
        }

        table = Table(
            ("run", ">3d"),
            ("20 s job s", ">10.2f"),
            ("60 s job s", ">10.2f"),
            ("ratio", ">6.2f"),
            ("segments", ">8d"),
            ("split s", ">8.2f"),
            ("at fal s", ">8.2f"),
            ("stitch s", ">8.2f"),
            title=f"POST → succeeded, Kling, {args.run_time:g} s of compute per request",
        )
        ratios = []
        with httpx.Client(base_url=api.base, headers=tenant.auth, timeout=60) as client:
            _run(client, urls["20 s"])  # warm: the worker's first media work, the price cache
            for i in range(1, args.runs + 1):
                one, _ = _run(client, urls["20 s"])
                whole, job = _run(client, urls["60 s"])
                phases = _phases(client, job)
                ratios.append(whole / one)
                table.row(i, one, whole, whole / one, len(job["segments"]), *phases)
        print(
            f"\n60 s video / 20 s video, median of {args.runs}: {statistics.median(ratios):.2f} "
            "(target ≤ 1.5)"
        )
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
