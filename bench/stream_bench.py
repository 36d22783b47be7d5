"""Telling the caller: how soon a committed job event is on an event stream's wire, and what
1,000 open event streams plus 1,000 held `Prefer: wait` requests cost one API process (memory,
and its accept throughput beside them).

    .venv/bin/python bench/stream_bench.py                    # both parts
    .venv/bin/python bench/stream_bench.py --samples 400 --streams 1000 --held 1000

Latency: one API process (no worker: the jobs stay queued), N event streams open on N jobs;
events are committed into `job_events` one at a time (the trigger announces each, as for any
transition) and the time from the commit's return to the event read by the stream's client is
recorded. Load: the API's accept throughput (closed loop, as gateway_bench) alone, then with
`--streams` event streams and `--held` `Prefer: wait=60` requests open on it, and its RSS before
and after opening them. Targets: ≤ 10 ms p50 on the wire; ≤ 100 MB extra RSS;
throughput with them open ≥ 0.8× without.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.database import connect
from harness.gateway import Api, gateway_env
from harness.load import LoadSpec, run_load
from harness.meters import proc_status
from harness.procs import HOST, BenchError, unpin
from harness.report import Table, pct
from harness.run import Run, add_load_flags, parse, parser

BODY = {"model": "kling-video-to-audio", "input": {"video_url": "https://example.com/clip.mp4"}}


def _args(argv: list[str] | None) -> Any:
    p = parser("stream_bench", __doc__)
    g = p.add_argument_group("stream_bench")
    g.add_argument("--samples", type=int, default=300, help="events timed on the wire [300]")
    g.add_argument("--latency-streams", type=int, default=20, help="streams they go to [20]")
    g.add_argument("--streams", type=int, default=1000, help="event streams held open [1000]")
    g.add_argument("--held", type=int, default=1000, help="Prefer: wait requests held [1000]")
    g.add_argument("--concurrency", type=int, default=16, help="accept load connections [16]")
    g.add_argument("--client", default="raw", choices=["raw", "httpx"])
    add_load_flags(g, warmup=2, duration=8, per="measurement")
    return parse(p, argv)


async def _create_jobs(api: Api, key: str, n: int) -> list[str]:
    """n queued jobs, over a few raw connections."""
    ids: list[str] = []
    body = json.dumps(BODY).encode()
    request = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def one_connection(count: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, api.port)
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            ids.append(json.loads(await reader.readexactly(length))["id"])
        writer.close()

    per = [n // 8 + (1 if i < n % 8 else 0) for i in range(8)]
    await asyncio.gather(*(one_connection(c) for c in per if c))
    return ids


async def _open(api: Api, key: str, path: str, extra: str) -> asyncio.StreamWriter:
    """A request whose answer stays open (an event stream, a held wait); the answer's head is
    read for a stream (it comes at once), not for a held request (it comes at the end)."""
    reader, writer = await asyncio.open_connection(HOST, api.port)
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n{extra}\r\n"
    writer.write(head.encode())
    await writer.drain()
    if "event-stream" in extra:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
    writer.reader = reader  # type: ignore[attr-defined]
    return writer


async def latency(run: Run, api: Api, key: str, tenant_id: str, args: Any) -> list[float]:
    jobs = await _create_jobs(api, key, args.latency_streams)
    waiting: dict[str, asyncio.Future[float]] = {}

    async def follow(job_id: str) -> None:
        writer = await _open(api, key, f"/v1/jobs/{job_id}/events", "Accept: text/event-stream\r\n")
        reader: asyncio.StreamReader = writer.reader  # type: ignore[attr-defined]
        while True:
            line = await reader.readline()
            if line.startswith(b"event: job.logs"):
                future = waiting.pop(job_id, None)
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())

    followers = [asyncio.create_task(follow(j)) for j in jobs]
    await asyncio.sleep(1.0)  # every stream open and past its history
    db = run.databases[0]
    conn = await connect(db)
    seqs = dict.fromkeys(jobs, 1)
    samples: list[float] = []
    try:
        for i in range(args.samples):
            job_id = jobs[i % len(jobs)]
            seqs[job_id] += 1
            future = asyncio.get_running_loop().create_future()
            waiting[job_id] = future
            await conn.execute(
                "INSERT INTO job_events (job_id, tenant_id, seq, type, data) "
                "VALUES ($1, $2, $3, 'job.logs', '{\"lines\": []}'::jsonb)",
                uuid.UUID(job_id),
                uuid.UUID(tenant_id),
                seqs[job_id],
            )
            committed = time.perf_counter()
            samples.append(await asyncio.wait_for(future, 10) - committed)
            await asyncio.sleep(0.01)  # one at a time, as a quiet gateway sees them
    finally:
        await conn.close()
        for task in followers:
            task.cancel()
    return samples


def _rss_mb(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / 1024


async def hold_open(api: Api, key: str, args: Any) -> list[asyncio.StreamWriter]:
    jobs = await _create_jobs(api, key, args.streams + args.held)
    writers: list[asyncio.StreamWriter] = []
    for i, job_id in enumerate(jobs):
        if i < args.streams:
            extra = "Accept: text/event-stream\r\n"
            writers.append(await _open(api, key, f"/v1/jobs/{job_id}/events", extra))
        else:
            writers.append(await _open(api, key, f"/v1/jobs/{job_id}", "Prefer: wait=60\r\n"))
    return writers


async def _all_waiting(api: Api, n: int, within_s: float = 50.0) -> None:
    deadline = time.perf_counter() + within_s
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        while True:
            text = (await client.get("/metrics")).text
            line = next(x for x in text.splitlines() if x.startswith("foley_job_waiters "))
            if float(line.split()[1]) >= n:
                return
            if time.perf_counter() > deadline:
                raise BenchError(f"only {line.split()[1]} of {n} requests waiting")
            await asyncio.sleep(0.2)  # the next look


def accept(args: Any, api: Api, key: str) -> dict[str, Any]:
    spec = LoadSpec(
        port=api.port,
        body=BODY,
        headers_list=[{"Authorization": f"Bearer {key}"}],
        concurrency=args.concurrency,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_requests=args.max_requests,
        client=args.client,
    )
    return run_load(spec, args.client_core)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    with Run("stream_bench", args, versions=("uvicorn", "starlette", "asyncpg")) as run:
        db = run.database()
        env = gateway_env(db, run.tmp / "data")
        api = Api(run.procs, env, run.out_dir).start(args.server_core)
        tenant = api.new_tenant("bench")

        samples = asyncio.run(latency(run, api, tenant.key, tenant.id, args))
        samples.sort()
        table = Table(
            ("events", ">6d"),
            *((name, ">8.2f") for name in ("p50 ms", "p90 ms", "p99 ms", "max ms")),
            title="a committed job event on the event stream's wire, after its commit",
        )
        table.row(len(samples), *(pct(samples, p) * 1000 for p in (50, 90, 99, 100)))

        before = accept(args, api, tenant.key)
        rss_before = _rss_mb(api.pid)

        async def loaded() -> tuple[float, dict[str, Any], int]:
            writers = await hold_open(api, tenant.key, args)
            # Measured once every one of them is waiting (the burst of their first reads done).
            await _all_waiting(api, len(writers))
            rss = _rss_mb(api.pid)
            # the load runs in a process of its own; the held connections stay open meanwhile
            result = await asyncio.to_thread(accept, args, api, tenant.key)
            for w in writers:
                w.close()
            return rss, result, len(writers)

        rss_open, during, n_open = asyncio.run(loaded())
        table = Table(
            ("beside", "<10"),
            ("accepts/s", ">9.0f"),
            ("p50 ms", ">7.1f"),
            ("p99 ms", ">7.1f"),
            ("errors", ">6d"),
            ("API RSS MB", ">10.1f"),
            title=f"\none API process: accept throughput, alone and beside {args.streams} event "
            f"streams + {args.held} held Prefer: wait requests",
        )
        for name, r, rss in (("nothing", before, rss_before), (f"{n_open} open", during, rss_open)):
            table.row(name, r["rps"], r["lat_p50_ms"], r["lat_p99_ms"], r["errors"], rss)
        ratio = during["rps"] / before["rps"] if before["rps"] else 0.0
        print(
            f"\nwire p50 {statistics.median(samples) * 1000:.2f} ms (target ≤ 10); extra RSS "
            f"{rss_open - rss_before:.1f} MB for {n_open} open (target ≤ 100); throughput with "
            f"them open {ratio:.2f}× (target ≥ 0.8)"
        )
        unpin(api.pid)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
