"""The result cache: how soon a hit is `succeeded` after its 202, and that it sends nothing to
fal.

    .venv/bin/python bench/cache_bench.py                     # 200 hits of each kind
    .venv/bin/python bench/cache_bench.py --hits 500

One API process, one worker, the fal emulator (fast mode). A tenant runs one job that asks for
the cache (ThinkSound audio, a seed) and waits for it to succeed upstream: the source. Then
`--hits` identical jobs, one at a time, each timed from the moment its 202 is read by the client
to the job's `completed_at` (the same machine's clock), for two inputs:

- an upload (`video_file_id`): its content hash is known at accept, so the hit is decided in the
  accept's own transaction — the 202 already shows the job succeeded (0 ms after it: the
  `completed_at` precedes the answer);
- a URL: the worker's dispatch fetches the input (the preflight), hashes it and looks the key up
  before anything is sent: NOTIFY → claim → fetch + probe → lookup → the hit's transaction.

The emulator's request log counts the submits received during the hits (must be 0). Target:
a hit ends `succeeded` within 20 ms p50 of its 202.
"""

from __future__ import annotations

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
from harness.report import Table, pct
from harness.run import Run, parse, parser


def _args(argv: list[str] | None) -> Any:
    p = parser("cache_bench", __doc__)
    g = p.add_argument_group("cache_bench")
    g.add_argument("--hits", type=int, default=200, help="hits timed per input kind [200]")
    return parse(p, argv)


def _hits(client: httpx.Client, body: dict[str, Any], n: int) -> tuple[list[float], int]:
    """n identical jobs, one at a time: seconds from each 202 read to its completed_at, and how
    many were already succeeded in their 202."""
    latencies: list[float] = []
    in_202 = 0
    for _ in range(n):
        r = client.post("/v1/jobs", json=body)
        answered = time.time()
        if r.status_code != 202:
            raise BenchError(f"POST /v1/jobs: {r.status_code} {r.text}")
        job = r.json()
        if job["status"] == "succeeded":
            in_202 += 1
        else:
            job = job_ended(client, job["id"])
        if not (job.get("cache") or {}).get("hit"):
            raise BenchError(f"job {job['id']} was not a cache hit: {job.get('cache')}")
        done = datetime.fromisoformat(job["completed_at"]).timestamp()
        latencies.append(max(0.0, done - answered))
    return latencies, in_202


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    with Run("cache_bench", args, versions=("uvicorn", "asyncpg")) as run:
        from app.media.samples import ensure_sample_video

        db = run.database()
        emu = start_emulator(run.procs, run.tmp / "emulator")
        env = gateway_env(db, run.tmp / "data", emu)
        api = Api(run.procs, env, run.out_dir).start(args.server_core)
        start_worker(run.procs, env, run.out_dir / "worker.log")
        tenant = api.new_tenant("bench", cache_default=True)
        clip = ensure_sample_video(run.tmp / "sample")
        url = emu.upload(clip, "video/mp4")

        table = Table(
            ("input", "<8"),
            ("hits", ">5d"),
            ("in 202", ">6d"),
            *((name, ">8.2f") for name in ("p50 ms", "p90 ms", "p99 ms", "max ms")),
            ("submits", ">7d"),
            title="a cache hit: its completed_at after its 202 was read (0: succeeded in the 202)",
        )
        p50s = []
        with httpx.Client(base_url=api.base, headers=tenant.auth, timeout=60) as client:
            r = client.post(
                "/v1/files", content=clip.read_bytes(), headers={"Content-Type": "video/mp4"}
            )
            if r.status_code != 201:
                raise BenchError(f"upload: {r.status_code} {r.text}")
            inputs = {"upload": {"video_file_id": r.json()["id"]}, "url": {"video_url": url}}
            # Another seed each: the URL's bytes are the upload's (else its source would hit).
            for seed, (name, source) in enumerate(inputs.items(), start=7):
                body = {"model": "thinksound-audio", "input": {**source, "seed": seed}}
                first = client.post("/v1/jobs", json=body).json()
                done = job_ended(client, first["id"])
                if done["status"] != "succeeded" or done["cache"]["hit"]:
                    raise BenchError(f"the source job: {done['status']} {done['cache']}")
                submits = len(emu.submits())
                latencies, in_202 = _hits(client, body, args.hits)
                sent = len(emu.submits()) - submits
                latencies.sort()
                p50s.append(pct(latencies, 50) * 1000)
                table.row(
                    name,
                    len(latencies),
                    in_202,
                    *(pct(latencies, p) * 1000 for p in (50, 90, 99, 100)),
                    sent,
                )
        print(
            f"\nhit p50 after its 202: upload {p50s[0]:.2f} ms, URL {p50s[1]:.2f} ms "
            "(target ≤ 20); submits during hits must be 0"
        )
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
