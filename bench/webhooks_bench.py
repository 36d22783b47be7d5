"""Webhooks benchmark: how soon a committed transition reaches a tenant's receiver, and how many
deliveries one worker makes a second.

    .venv/bin/python bench/webhooks_bench.py                     # both, ~1 minute
    .venv/bin/python bench/webhooks_bench.py --rate 50 --duration 20 --deliveries 20000

One endpoint subscribed to every event, served by a fast local receiver (a raw ASGI app under
uvicorn, a process of its own) that notes the wall clock at each arrival; ONE worker.

1. Committed -> received at `--rate` jobs/s worth of transitions: the four transitions of a job
   at fal (job.started, job.processing, job.logs, job.succeeded), each committed in a
   transaction of its own into `job_events` (the table the store appends to; the outbox trigger
   and its NOTIFY are the same whoever appends), for jobs that already ran (so the worker's
   steps are idle and the figure is the webhook path's alone). Latency = arrival minus the
   wall clock just before the COMMIT was sent (a little long, if anything), matched by
   webhook-id.
2. The same, whole: jobs at `--life-rate` through the API, the worker and the emulator
   (`--fast`, `--runtime-s` each). Latency = arrival minus the event's `timestamp` (the
   transition's time, taken just before its commit). A job's worker CPU is ~30 ms
   (gateway_bench), so one worker cannot carry 50 jobs/s through their whole lives on 2 cores.
3. Throughput: `--deliveries` pings due at once to that receiver, then a fresh worker started:
   deliveries per second between its first and its last attempt (webhook_attempts), the
   per-receiver cap at its default (FOLEY_TENANT_WEBHOOK_RECEIVER_CONCURRENCY=10) unless
   `--receiver-concurrency` says otherwise.
See bench/README.md for the figures of earlier runs.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from harness import fal, report
from harness.database import Database, run_sql, settings_note
from harness.gateway import Api, gateway_env, start_worker, wait_finished
from harness.load import LoadSpec, run_load
from harness.meters import cpu_of
from harness.procs import REPO, BenchError, clean_env
from harness.profile import profiling
from harness.run import Run, parse, parser

BENCH = REPO / "bench"
RECEIVER_APP = "webhooks_bench:create_receiver"  # this file, served from bench/
VERSIONS = ("httpx", "standardwebhooks", "uvicorn", "asyncpg")


def create_receiver():  # type: ignore[no-untyped-def]
    """A receiver that costs as little as a receiver can: note the arrival, answer 204. `GET
    /records` answers what arrived: [[wall clock, webhook-id, body]]; `DELETE /records` forgets."""
    records: list[tuple[float, str, str]] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            at = time.time()
            headers = dict(scope["headers"])
            records.append((at, headers.get(b"webhook-id", b"").decode(), body.decode()))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = b"{}"
        if scope["path"] == "/records" and scope["method"] == "GET":
            answer = json.dumps(records).encode()
        elif scope["path"] == "/records" and scope["method"] == "DELETE":
            records.clear()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def records(receiver: Api) -> list[tuple[float, str, str]]:
    import httpx

    r = httpx.get(f"{receiver.base}/records", timeout=60)
    return [tuple(x) for x in r.json()]  # type: ignore[misc]


def add_endpoint(api: Api, key: str, url: str) -> dict[str, Any]:
    import httpx

    r = httpx.post(
        f"{api.base}/v1/webhook-endpoints",
        json={"url": url},
        headers={"Authorization": f"Bearer {key}"},
    )
    if r.status_code != 201:
        raise BenchError(f"POST /v1/webhook-endpoints: {r.status_code} {r.text}")
    return r.json()  # type: ignore[no-any-return]


# --- 1. committed -> received, the webhook path alone -----------------------------------------

TRANSITIONS = ("job.started", "job.processing", "job.logs", "job.succeeded")


async def _append_events(db: Database, jobs: list[Any], rate: float, seconds: float) -> dict:
    """`rate` jobs/s worth of transitions, each its own transaction, at a steady pace; when
    each COMMIT left, by webhook-id."""
    import asyncio

    import asyncpg

    pool = await asyncpg.create_pool(db.dsn, min_size=8, max_size=8)
    sent: dict[str, float] = {}
    per_s = rate * len(TRANSITIONS)
    total = int(per_s * seconds)
    insert = (
        "INSERT INTO job_events (job_id, tenant_id, seq, type, data) "
        "VALUES ($1, $2, $3, $4, '{}'::jsonb)"
    )

    async def one(i: int) -> None:
        job = jobs[(i // len(TRANSITIONS)) % len(jobs)]
        seq = 1000 + i
        async with pool.acquire() as conn:
            sent[f"msg_{job['id'].hex}_{seq}"] = time.time()
            await conn.execute(insert, job["id"], job["tenant_id"], seq, TRANSITIONS[i % 4])

    start = time.perf_counter()
    tasks = []
    for i in range(total):
        delay = start + i / per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    await pool.close()
    return sent


def path_only(
    args: Any, run: Run, db: Database, api: Api, key: str, receiver: Api, body: dict
) -> dict:
    import asyncio

    import httpx

    worker = start_worker(run.procs, api.env, run.out_dir / "worker.log")
    ids = []
    # Enough jobs that each one's transitions are 2 s apart: its job.logs are never coalesced.
    for _ in range(int(args.rate * 2)):
        r = httpx.post(f"{api.base}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
        if r.status_code != 202:
            raise BenchError(f"POST /v1/jobs: {r.status_code} {r.text}")
        ids.append(uuid.UUID(r.json()["id"]))
    if wait_finished(db, ids, within_s=180):
        raise BenchError(
            f"{len(ids)} jobs did not end within 180 s; {worker.log}:\n{worker.tail()}"
        )
    jobs = run_sql(db, "SELECT id, tenant_id FROM jobs WHERE id = ANY($1)", ids)
    _drain(db, 60)
    httpx.delete(f"{receiver.base}/records")
    print(
        f"\n== 1. committed -> received, the webhook path alone: {args.rate:g} jobs/s worth of "
        f"transitions ({args.rate * len(TRANSITIONS):g} commits/s) for {args.duration:g} s"
    )
    cpu0 = cpu_of(worker.pid)
    with profiling(
        args.profile, run.out_dir, worker.pid, "worker", args.duration, args.profile_top
    ):
        sent = asyncio.run(_append_events(db, jobs, args.rate, args.duration))
    _drain(db, args.finish_wait)
    cpu = cpu_of(worker.pid) - cpu0
    run.procs.stop(worker)
    got = {mid: at for at, mid, _ in records(receiver)}
    lat = sorted(got[m] - t for m, t in sent.items() if m in got)
    stages = run_sql(
        db,
        "SELECT d.message_id, extract(epoch FROM d.created_at) AS made, "
        "extract(epoch FROM min(a.attempted_at)) AS attempted FROM webhook_deliveries d "
        "JOIN webhook_attempts a ON a.delivery_id = d.id GROUP BY d.id",
    )
    made, attempted, arrived = [], [], []
    for row in stages:
        t = sent.get(row["message_id"])
        if t is None or row["message_id"] not in got:
            continue
        made.append(float(row["made"]) - t)
        attempted.append(float(row["attempted"]) - float(row["made"]))
        arrived.append(got[row["message_id"]] - float(row["attempted"]))
    missing = len(sent) - len(lat)
    print(
        f"   {len(sent)} transitions committed, {len(got)} webhooks received ({missing} not: "
        f"job.logs coalesced within 500 ms per job); worker CPU "
        f"{cpu / max(1, len(got)) * 1000:.2f} ms per webhook"
    )
    table = report.Table(
        ("", "<16"), ("n", ">6"), ("p50", ">9"), ("p90", ">9"), ("p99", ">9"), ("max", ">9"),
        title="committed -> received at the receiver (ms):",
    )  # fmt: skip
    table.row("all", len(lat), *report.latency_row(lat)[:4])
    table.row("  fanned out", len(made), *report.latency_row(made)[:4])
    table.row("  attempt began", len(attempted), *report.latency_row(attempted)[:4])
    table.row("  arrived", len(arrived), *report.latency_row(arrived)[:4])
    return {"p50": report.pct(lat, 50), "p99": report.pct(lat, 99), "n": len(lat)}


def _drain(db: Database, within_s: float) -> None:
    """Until nothing is left in the outbox or waiting to be delivered."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        left = run_sql(
            db,
            "SELECT (SELECT count(*) FROM notification_outbox) + (SELECT count(*) FROM "
            "webhook_deliveries WHERE status = 'pending') AS n",
        )[0]["n"]
        if left == 0:
            return
        time.sleep(0.1)


# --- 2. committed -> received, whole ---------------------------------------------------------


def latency(
    args: Any, run: Run, db: Database, api: Api, key: str, receiver: Api, body: dict
) -> dict:
    worker = start_worker(
        run.procs, api.env, run.out_dir / "worker-life.log", FOLEY_WORKER_CONCURRENCY="16"
    )
    import httpx

    r = httpx.post(f"{api.base}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
    if r.status_code != 202 or wait_finished(db, [uuid.UUID(r.json()["id"])], within_s=60):
        raise BenchError(f"a first job did not end within 60 s; {worker.log}:\n{worker.tail()}")
    httpx.delete(f"{receiver.base}/records")
    print(
        f"\n== 2. committed -> received, whole: jobs at {args.life_rate:g}/s for {args.warmup:g} s "
        "warm-up + "
        f"{args.duration:g} s, run time {args.runtime_s:g} s; one worker; one endpoint, every "
        "event type"
    )
    spec = LoadSpec(
        mode="rate",
        port=api.port,
        body=body,
        headers_list=[{"Authorization": f"Bearer {key}"}],
        rate=args.life_rate,
        concurrency=32,
        warmup_s=args.warmup,
        duration_s=args.duration,
    )
    cpu0 = cpu_of(worker.pid)
    result = run_load(spec, timeout=args.warmup + args.duration + 90)
    ids = [uuid.UUID(a["id"]) for a in result["accepted"]]
    measured = {a["id"] for a in result["accepted"] if not a["warmup"]}
    unfinished = wait_finished(db, ids, args.finish_wait)
    expected = run_sql(
        db,
        "SELECT count(*) AS n FROM job_events WHERE job_id = ANY($1) AND type IN "
        "('job.started', 'job.processing', 'job.logs', 'job.succeeded', 'job.failed', "
        "'job.canceled')",
        ids,
    )[0]["n"]
    _drain(db, args.finish_wait)
    worker_cpu = cpu_of(worker.pid) - cpu0
    run.procs.stop(worker)
    got = records(receiver)
    by_type: dict[str, list[float]] = defaultdict(list)
    for at, _, text in got:
        payload = json.loads(text)
        if payload["data"].get("id") not in measured:
            continue
        committed = datetime.fromisoformat(payload["timestamp"]).timestamp()
        by_type[payload["type"]].append(at - committed)
    every = sorted(v for values in by_type.values() for v in values)
    if not every:
        raise BenchError(f"no webhook arrived; {worker.log}:\n{worker.tail()}")
    print(
        f"   {len(ids)} jobs accepted ({result['errors']} errors), {unfinished} unfinished; "
        f"{len(got)} webhooks received of {expected} deliverable events (job.logs coalesced); "
        f"worker CPU {worker_cpu / max(1, len(ids)) * 1000:.1f} ms per job"
    )
    table = report.Table(
        ("event", "<16"), ("n", ">6"), ("p50", ">9"), ("p90", ">9"), ("p99", ">9"), ("max", ">9"),
        title="committed -> received at the receiver (ms):",
    )  # fmt: skip
    for kind in sorted(by_type):
        values = sorted(by_type[kind])
        table.row(kind, len(values), *report.latency_row(values)[:4])
    table.row("all", len(every), *report.latency_row(every)[:4])
    return {"p50": report.pct(every, 50), "p99": report.pct(every, 99), "n": len(every)}


# --- 2. deliveries per second --------------------------------------------------------------------


def throughput(args: Any, run: Run, db: Database, api: Api, endpoint: dict, receiver: Api) -> dict:
    import httpx

    httpx.delete(f"{receiver.base}/records")
    run_sql(db, "TRUNCATE webhook_deliveries CASCADE")
    ping = json.dumps({"type": "ping", "timestamp": "2026-12-07T00:00:00Z", "data": {}})
    run_sql(
        db,
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, target, message_id, type, "
        "body, status, next_attempt_at, created_at) "
        "SELECT gen_random_uuid(), $1, $2::uuid, $2::uuid::text, 'msg_bench_' || i, 'ping', $3, "
        "'pending', "
        "now(), now() FROM generate_series(1, $4) AS i",
        uuid.UUID(endpoint["tenant_id"]),
        uuid.UUID(endpoint["id"]),
        ping,
        args.deliveries,
    )
    settings = {}
    if args.receiver_concurrency:
        settings["FOLEY_TENANT_WEBHOOK_RECEIVER_CONCURRENCY"] = str(args.receiver_concurrency)
    cap = args.receiver_concurrency or 10
    print(
        f"\n== 3. deliveries per second: {args.deliveries} due at once to one receiver, one "
        f"fresh worker, at most {cap} in flight to it"
    )
    worker = start_worker(run.procs, api.env, run.out_dir / "worker-3.log", **settings)
    deadline = time.monotonic() + 120
    cpu0 = None
    while time.monotonic() < deadline:
        worker.check()
        left = run_sql(
            db, "SELECT count(*) AS n FROM webhook_deliveries WHERE status <> 'succeeded'"
        )[0]["n"]
        if cpu0 is None and left < args.deliveries:
            cpu0 = cpu_of(worker.pid)  # sending has begun: the worker's start-up left out
        if left == 0:
            break
        time.sleep(0.1)
    else:
        raise BenchError(f"deliveries not all made within 120 s; {worker.log}:\n{worker.tail()}")
    cpu = cpu_of(worker.pid) - (cpu0 or 0.0)
    span = run_sql(
        db,
        "SELECT count(*) AS n, extract(epoch FROM max(attempted_at) - min(attempted_at)) AS s "
        "FROM webhook_attempts",
    )[0]
    rate = span["n"] / float(span["s"]) if span["s"] else float("inf")
    received = len(records(receiver))
    print(
        f"   {span['n']} attempts in {float(span['s']):.2f} s: {rate:.0f} deliveries/s; "
        f"{received} received; worker CPU {cpu / max(1, span['n']) * 1000:.2f} ms per delivery"
    )
    return {"rate": rate}


def parse_args(argv: Sequence[str] | None) -> Any:
    p = parser("webhooks_bench", __doc__, profile=True)
    g = p.add_argument_group("webhooks_bench")
    g.add_argument("--rate", type=float, default=50.0, help="jobs/s of transitions, 1. [50]")
    g.add_argument("--life-rate", type=float, default=10.0, help="jobs/s through 2. [10]")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds [2]")
    g.add_argument("--duration", type=float, default=10.0, help="measured seconds [10]")
    g.add_argument("--runtime-s", type=float, default=1.0, help="each job's time at fal [1]")
    g.add_argument("--finish-wait", type=float, default=60.0, help="seconds [60]")
    g.add_argument("--deliveries", type=int, default=10_000, help="for measurement 2 [10000]")
    g.add_argument("--receiver-concurrency", type=int, default=None, help="[the default, 10]")
    g.add_argument("--skip-path", action="store_true", help="skip measurement 1")
    g.add_argument("--skip-latency", action="store_true", help="skip measurement 2")
    g.add_argument("--skip-throughput", action="store_true")
    return parse(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Run("webhooks_bench", args, versions=VERSIONS) as run:
        db = run.database("foley_webhooks_bench")
        print(settings_note(db))
        emu = fal.start_emulator(
            run.procs, run.tmp / "emulator", concurrency=400, run_time_s=args.runtime_s
        )
        env = gateway_env(db, run.tmp / "gateway", emu)
        api = Api(run.procs, env, run.out_dir)
        api.env["FOLEY_PUBLIC_URL"] = api.base
        api.start()
        receiver = Api(
            run.procs, clean_env(), run.out_dir, app=RECEIVER_APP, app_dir=BENCH, name="receiver"
        ).start()
        key = api.new_tenant("bench").key
        endpoint = add_endpoint(api, key, f"{receiver.base}/hook")
        from tests.support.clips import make_bouncing_square

        clip = make_bouncing_square(run.tmp / "clip.mp4", duration_s=2.0, width=96, height=64)
        body = {"model": "thinksound", "input": {"video_url": emu.upload(clip.path, "video/mp4")}}
        path = None if args.skip_path else path_only(args, run, db, api, key, receiver, body)
        lat = None if args.skip_latency else latency(args, run, db, api, key, receiver, body)
        out = None if args.skip_throughput else throughput(args, run, db, api, endpoint, receiver)
        print("\n== summary")
        if path:
            verdict = "ok" if path["p50"] <= 0.025 and path["p99"] <= 0.100 else "MISSED"
            print(
                f"   committed -> received at {args.rate:g} jobs/s: p50 {path['p50'] * 1000:.1f} "
                f"ms, p99 {path['p99'] * 1000:.1f} ms over {path['n']} webhooks (target p50 "
                f"<= 25, p99 <= 100): {verdict}"
            )
        if lat:
            print(
                f"   whole, at {args.life_rate:g} jobs/s: p50 {lat['p50'] * 1000:.1f} ms, p99 "
                f"{lat['p99'] * 1000:.1f} ms over {lat['n']} webhooks"
            )
        if out:
            verdict = "ok" if out["rate"] >= 500 else "MISSED"
            print(f"   one worker: {out['rate']:.0f} deliveries/s (target >= 500): {verdict}")
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
