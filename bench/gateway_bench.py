"""Gateway benchmark: accept throughput against a bare FastAPI + asyncpg baseline, the latency
from a job's 202 to its submit reaching (the emulator of) fal, and what a job costs over its
whole life: worker CPU and requests sent to fal.

    .venv/bin/python bench/gateway_bench.py                      # everything, ~3 minutes
    .venv/bin/python bench/gateway_bench.py --skip-latency --rounds 5
    .venv/bin/python bench/gateway_bench.py --skip-throughput --runtime-s 5 --webhooks

1. Accept throughput: `POST /v1/jobs` on ONE uvicorn process serving the gateway (no worker)
   against `create_baseline_app` below, same Postgres, pool bounds and uvicorn settings; a
   closed loop from a process of its own; servers on core 0, load on core 1; rounds alternate.
2. Jobs at a steady `--rate` through the API, ONE worker and the emulator (`--fast`, each run
   taking `--runtime-s`), polling or `--webhooks`. Latency = the emulator's log time of the
   submit minus the client's wall clock at the 202. The CPU meters and the emulator's request
   log cover the run until every job has reached a terminal state: per job, whole life. With
   `--count-statements`, the statements the worker sent to Postgres too (harness/statements.py).
See bench/README.md for what each figure means and the figures of earlier runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from harness import fal, report
from harness.database import Database, postgres_cpu, run_sql, settings_note
from harness.gateway import (
    GATEWAY_APP,
    Api,
    gateway_env,
    start_worker,
    wait_finished,
    wait_submitted,
)
from harness.load import LoadSpec, run_load
from harness.meters import CpuMeter, cpu_of
from harness.procs import REPO, BenchError, unpin
from harness.profile import profiling
from harness.run import Run, add_load_flags, parse, parser
from harness.statements import ENV as STATEMENTS_ENV
from harness.statements import counts as statement_counts

BENCH = REPO / "bench"
BASELINE_APP = "gateway_bench:create_baseline_app"  # this file, served from bench/
BASELINE_TABLE = "bench_baseline_jobs"
VERSIONS = ("fastapi", "uvicorn", "sqlalchemy", "asyncpg")
# The gateway's pools (FOLEY_DB_POOL_SIZE 10, growing to twice that) bound the baseline's too.
POOL_MIN, POOL_MAX = 10, 20


def job_body(video_url: str) -> dict[str, Any]:
    return {
        "model": "thinksound",
        "input": {"video_url": video_url, "prompt": "a ball bouncing on a wooden floor", "seed": 7},
        "metadata": {"bench": "gateway_bench"},
    }


def create_baseline_app():  # type: ignore[no-untyped-def]
    """The floor of "FastAPI + one insert": the body as a dict, one INSERT on an asyncpg pool,
    a 202 with a small JSON; no auth, no validation, no NOTIFY. Served by `uvicorn
    gateway_bench:create_baseline_app --factory --app-dir bench`."""
    from contextlib import asynccontextmanager

    import asyncpg
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    dsn = os.environ["BENCH_BASELINE_DSN"]
    insert = f"INSERT INTO {BASELINE_TABLE} (id, body) VALUES ($1, $2::jsonb) RETURNING created_at"

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.pool = await asyncpg.create_pool(dsn, min_size=POOL_MIN, max_size=POOL_MAX)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/jobs", status_code=202)
    async def create_job(body: dict[str, Any]) -> JSONResponse:
        job_id = uuid.uuid4()
        async with app.state.pool.acquire() as conn:
            created_at = await conn.fetchval(insert, job_id, json.dumps(body))
        answer = {"id": str(job_id), "object": "job", "status": "queued"}
        answer |= {"input": body.get("input"), "created_at": created_at.isoformat()}
        return JSONResponse(answer, status_code=202)

    return app


# --- 1. accept throughput -----------------------------------------------------------------------


def throughput(args: Any, run: Run, db: Database, api: Api, key: str, body: dict) -> dict:
    """Rounds of baseline and gateway; the median req/s of each and their ratio."""
    run_sql(
        db,
        f"CREATE TABLE {BASELINE_TABLE} (id uuid PRIMARY KEY, body jsonb NOT NULL, "
        "created_at timestamptz NOT NULL DEFAULT now())",
    )
    env = {**os.environ, "BENCH_BASELINE_DSN": db.dsn}
    baseline = Api(run.procs, env, run.out_dir, app=BASELINE_APP, app_dir=BENCH, name="baseline")
    baseline.start(args.server_core)
    targets = {"baseline": (baseline, {}), "gateway": (api, {"Authorization": f"Bearer {key}"})}
    print(
        f"\n== 1. accept throughput: closed loop, {args.concurrency} connections, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s (<= {args.max_requests} requests) "
        f"per round, {args.rounds} round(s), client={args.client}\n   (server/pg CPU: ms per "
        "answered request, warm-up included; client CPU: the load generator's share of its core)"
    )
    table = report.Table(
        *(("round", "d"), ("target", "<8"), ("req/s", ".0f"), ("ok", "6d"), ("errors", "d")),
        *(("p50 ms", ".1f"), ("p99 ms", ".1f"), ("server CPU", ".2f"), ("pg CPU", ".2f")),
        ("client CPU", ".0%"),
    )
    rps: dict[str, list[float]] = {name: [] for name in targets}
    if args.interleave is not None:
        return interleaved(args, run, db, targets, body, table, baseline)
    for rnd in range(1, args.rounds + 1):
        for name, (target, headers) in targets.items():
            meter = CpuMeter(
                {"server": lambda t=target: cpu_of(t.pid), "pg": partial(postgres_cpu, db)}
            )
            meter.start()
            result = run_load(accept_load(args, target.port, body, headers), args.client_core)
            meter.stop()
            n = max(1, result["answered"])
            table.row(
                *(rnd, name, result["rps"], result["ok"], result["errors"]),
                *(result["lat_p50_ms"], result["lat_p99_ms"], meter.used["server"] / n * 1000),
                meter.used["pg"] / n * 1000 if db.embedded else "n/a",
                result["client_cpu"],
            )
            if result["first_error"]:
                table.note(f"first error: {result['first_error']}")
            rps[name].append(result["rps"])
    baseline.stop()
    medians = {name: statistics.median(values) for name, values in rps.items()}
    medians["ratio"] = medians["gateway"] / medians["baseline"] if medians["baseline"] else 0.0
    print(
        f"   median: baseline {medians['baseline']:.0f} req/s, gateway {medians['gateway']:.0f} "
        f"req/s: ratio {medians['ratio']:.2f} (target >= 0.6)"
    )
    if args.profile:  # one more gateway round under py-spy
        seconds = max(5.0, args.duration)
        spec = accept_load(args, api.port, body, targets["gateway"][1])
        spec.warmup_s, spec.duration_s = 0.5, seconds + 1
        with profiling(True, run.out_dir, api.pid, "api-accept", seconds, args.profile_top):
            run_load(spec, args.client_core)
    return medians


def interleaved(
    args: Any, run: Run, db: Database, targets: dict, body: dict, table: Any, baseline: Api
) -> dict:
    """One load of --rounds x --duration seconds on baseline and gateway in turn (`alternate`
    in harness.load): the ratio of two throughputs measured in the same seconds."""
    (base, _), (gateway, headers) = targets["baseline"], targets["gateway"]
    spec = accept_load(args, base.port, body, {})
    spec.mode, spec.slice_s = "alternate", args.interleave
    spec.other_port, spec.other_headers_list = gateway.port, [headers]
    spec.duration_s = args.duration * args.rounds
    meter = CpuMeter(
        {"baseline": lambda: cpu_of(base.pid), "gateway": lambda: cpu_of(gateway.pid)}
        | {"pg": partial(postgres_cpu, db)}
    )
    meter.start()
    result = run_load(spec, args.client_core)
    meter.stop()
    sides = dict(zip(("baseline", "gateway"), result["sides"], strict=True))
    for name, side in sides.items():
        table.row(
            *("-", name, side["rps"], side["ok"], side["errors"]),
            *(side["lat_p50_ms"], side["lat_p99_ms"]),
            meter.used[name] / max(1, side["answered"]) * 1000,
            "shared",
            result["client_cpu"],
        )
        if side["first_error"]:
            table.note(f"first error: {side['first_error']}")
    baseline.stop()
    medians = {name: side["rps"] for name, side in sides.items()}
    medians["ratio"] = medians["gateway"] / medians["baseline"] if medians["baseline"] else 0.0
    print(
        f"   in turn, {args.interleave:g} s each over {spec.duration_s:g} s: baseline "
        f"{medians['baseline']:.0f} req/s, gateway {medians['gateway']:.0f} req/s of their own "
        f"time: ratio {medians['ratio']:.2f} (target >= 0.6)"
    )
    return medians


def accept_load(args: Any, port: int, body: dict, headers: dict[str, str]) -> LoadSpec:
    return LoadSpec(
        port=port,
        body=body,
        headers_list=[headers],
        concurrency=args.concurrency,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_requests=args.max_requests,
        client=args.client,
    )


# --- 2. jobs through the whole life cycle ---------------------------------------------------------


def life_cycle(args: Any, run: Run, db: Database, api: Api, key: str, emu: Any, body: dict) -> dict:
    """Jobs at a steady rate until every one has ended: latency to the submit, CPU and requests
    to fal per job."""
    run_sql(db, "TRUNCATE jobs CASCADE")  # measurement 1's jobs were never meant to run
    unpin(api.pid)  # the API may use both cores from now on
    counted = run.out_dir / "statements.json"
    counted.unlink(missing_ok=True)
    worker = start_worker(
        run.procs,
        api.env | {STATEMENTS_ENV: str(counted)},
        run.out_dir / "worker.log",
        f"{sys.executable} {BENCH / 'harness' / 'statements.py'} worker"
        if args.count_statements
        else args.worker_cmd,
        FOLEY_WORKER_CONCURRENCY=str(args.worker_concurrency),
        FOLEY_FAL_CONCURRENCY=str(args.fal_concurrency),
    )
    import httpx  # one job through its whole life first: the pipeline works, nothing is left

    r = httpx.post(f"{api.base}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
    if r.status_code != 202:
        raise BenchError(f"POST /v1/jobs: {r.status_code} {r.text}")
    if wait_finished(db, [uuid.UUID(r.json()["id"])], within_s=60 + 2 * args.runtime_s):
        raise BenchError(f"a first job did not end within 60 s; {worker.log}:\n{worker.tail()}")
    emu.reset(jobs=False)  # the request log and webhook attempts start empty
    time.sleep(0.5)  # the statements counted so far written (every 0.2 s): not this run's
    sent_before = statement_counts(counted)
    mode = "webhooks (FOLEY_PUBLIC_URL set)" if args.webhooks else "polling (no FOLEY_PUBLIC_URL)"
    print(
        f"\n== 2. jobs at {args.rate:g}/s for {args.latency_warmup:g} s warm-up + "
        f"{args.latency_duration:g} s; emulator --fast --concurrency {args.emulator_concurrency}, "
        f"run time {args.runtime_s:g} s; one worker (FOLEY_WORKER_CONCURRENCY="
        f"{args.worker_concurrency}, FOLEY_FAL_CONCURRENCY={args.fal_concurrency}); {mode}"
    )
    processes = {
        "API": lambda: cpu_of(api.pid),
        "worker": lambda: cpu_of(worker.pid),
        "emulator": lambda: cpu_of(emu.process.pid),
        "postgres": partial(postgres_cpu, db),
    }
    load, life = CpuMeter(processes).start(), CpuMeter(processes).start()
    spec = LoadSpec(
        mode="rate",
        port=api.port,
        body=body,
        headers_list=[{"Authorization": f"Bearer {key}"}],
        rate=args.rate,
        concurrency=args.rate_connections,
        warmup_s=args.latency_warmup,
        duration_s=args.latency_duration,
        client=args.client,
    )
    seconds = args.latency_warmup + args.latency_duration
    with profiling(args.profile, run.out_dir, worker.pid, "worker", seconds, args.profile_top):
        result = run_load(spec, timeout=seconds + 90)
    load.stop()
    worker.check()
    accepted = result["accepted"]
    print(
        f"   sent {result['sent']} in {result['elapsed_s']:.1f} s ({result['late_sends']} sent "
        f">5 ms late), 202: {len(accepted)}, errors: {result['errors']}"
        + (f" (first: {result['first_error']})" if result["first_error"] else "")
    )
    ids = [uuid.UUID(a["id"]) for a in accepted]
    unsubmitted = wait_submitted(db, ids, args.drain_wait)
    unfinished = wait_finished(db, ids, args.finish_wait)
    life.stop()
    took = life.wall
    entries = emu.requests()
    figures = latency(args, db, accepted, entries, unsubmitted)
    statuses = run_sql(
        db, "SELECT status, count(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY 1 ORDER BY 1", ids
    )
    finished = len(ids) - unfinished
    print(
        f"   jobs: {len(ids)} accepted, "
        + ", ".join(f"{r['status']} {r['n']}" for r in statuses)
        + f"; {finished} ended {took:.1f} s after the first POST ({finished / took:.1f} jobs/s)"
    )
    if unfinished:
        print(
            f"   !! {unfinished} job(s) not ended {args.finish_wait:g} s after the last POST: the "
            "per-job figures below include part of their lives (raise --finish-wait)"
        )
    per_job = max(1, finished)
    table = report.Table(
        ("process", "<14"),
        ("CPU during the load", ".0%"),
        ("CPU ms per job, whole life", ".1f"),
        title=f"CPU (share of one core; 2 cores = 200%), per job over {finished} ended jobs:",
    )
    for name in processes:
        table.row(name, load.share(name), life.used[name] / per_job * 1000)
    table.row("load generator", result["client_cpu"], None)
    figures["worker_ms"] = life.used["worker"] / per_job * 1000
    figures |= fal_requests(entries, emu, body, per_job)
    if args.count_statements:
        time.sleep(0.5)
        figures |= statements(statement_counts(counted) - sent_before, per_job)
    return figures


def statements(sent: Any, per_job: int, shown: int = 10) -> dict:
    """The statements the worker sent to Postgres during the run, per ended job, the most sent
    first (each by the start of its text)."""
    table = report.Table(
        ("statement", "<72"),
        ("count", "d"),
        ("per job", ".2f"),
        title=f"statements the worker sent to Postgres, per ended job ({per_job}):",
    )
    for text, n in sent.most_common(shown):
        table.row(text[:72], n, n / per_job)
    total = sum(sent.values())
    table.row(
        f"(the {max(0, len(sent) - shown)} other kinds)",
        total - sum(n for _, n in sent.most_common(shown)),
        None,
    )
    table.row("all statements (a transaction's BEGIN and COMMIT included)", total, total / per_job)
    table.note("counted in the worker (a few µs each): its CPU figure above is a little high")
    return {"statements_per_job": total / per_job}


def latency(args: Any, db: Database, accepted: list, entries: list, unsubmitted: int) -> dict:
    """202 -> submit at the emulator, and its breakdown through the job row's submitted_at."""
    if unsubmitted:
        print(f"   !! {unsubmitted} job(s) not submitted {args.drain_wait:g} s after the last POST")
    ids = [uuid.UUID(a["id"]) for a in accepted]
    rows = run_sql(
        db, "SELECT id, upstream_request_id, submitted_at FROM jobs WHERE id = ANY($1)", ids
    )
    by_id = {str(r["id"]): r for r in rows}
    submits = {
        e["request_id"]: fal.logged_at(e)
        for e in entries
        if fal.request_kind(e) == "submit" and e.get("request_id")
    }
    lat, to_sending, sending_to_emu, answer = [], [], [], []
    for a in (a for a in accepted if not a["warmup"]):
        row = by_id.get(a["id"])
        emu_at = submits.get(row["upstream_request_id"]) if row else None
        answer.append(a["s"])
        # never submitted within the wait: counted (as longer than the wait), not dropped
        lat.append(emu_at - a["at"] if emu_at is not None else math.inf)
        if emu_at is not None and row["submitted_at"] is not None:
            to_sending.append(row["submitted_at"].timestamp() - a["at"])
            sending_to_emu.append(emu_at - row["submitted_at"].timestamp())
    if not lat or all(math.isinf(v) for v in lat):
        raise BenchError("no submit matched an accepted job (see the worker's log)")
    table = report.Table(
        ("from -> to", "<34"),
        *report.LATENCY_COLUMNS,
        title="accept -> submit (breakdown: the job row's submitted_at, written by the worker "
        "just before the HTTP call):",
    )
    for label, values in (
        ("202 -> submit at the emulator", lat),
        ("  202 -> worker marks 'sending'", to_sending),
        ("  'sending' -> emulator receives", sending_to_emu),
        ("POST /v1/jobs answer time (client)", answer),
    ):
        table.row(label, *report.latency_row(values, censored_at=args.drain_wait))
    slowest = max(range(len(lat)), key=lat.__getitem__)
    print(
        f"   slowest: the {report.ordinal(slowest + 1)} of {len(lat)} measured jobs "
        f"({report.ms(lat[slowest], censored_at=args.drain_wait)} ms)"
    )
    ordered = sorted(lat)
    return {"latency": [report.pct(ordered, p) for p in (50, 90, 99, 100)]}


def fal_requests(entries: list, emu: Any, body: dict, per_job: int) -> dict:
    """What the emulator received from the gateway during the run, by kind, per ended job. The
    input's fetch goes to the tenant's URL (here on the emulator's CDN): listed, not counted."""
    counts = fal.count_requests(entries, frozenset({urlsplit(body["input"]["video_url"]).path}))
    fetches = counts.pop("input fetch", 0)
    table = report.Table(
        ("request", "<38"),
        ("count", "d"),
        ("per job", ".2f"),
        title=f"requests the emulator received (its request log), per ended job ({per_job}):",
    )
    by_kind = {kind: counts[kind] / per_job for kind in fal.KINDS if counts[kind]}
    for kind, n in by_kind.items():
        table.row(kind, counts[kind], n)
    total = sum(counts.values())
    table.row("all requests to fal", total, total / per_job)
    table.row("(input fetch: the tenant's URL)", fetches, fetches / per_job)
    for outcome, n in sorted(fal.webhook_outcomes(emu).items()):
        table.row(f"(webhook to the API: {outcome})", n, n / per_job)
    if len(entries) >= fal.REQUEST_LOG_SIZE:
        table.note("!! the request log is full: these counts are a lower bound")
    return {"fal_per_job": total / per_job, "fal_by_kind": by_kind}


def summary(accept: dict | None, jobs: dict | None) -> None:
    """The figures the project is held to, from this one run."""
    print("\n== summary")
    table = report.Table(
        ("figure", "<42"), ("value", "<30"), ("target", "<"), title="the figures of this run:"
    )
    if accept:
        table.row(
            "(a) accept throughput, gateway / baseline",
            f"{accept['gateway']:.0f} / {accept['baseline']:.0f} req/s = {accept['ratio']:.2f}",
            ">= 0.6",
        )
    if jobs:
        p50, p90, p99, top = (report.ms(v) for v in jobs["latency"])
        table.row(
            "(b) accept -> submit p50 / p90 / p99 / max",
            f"{p50} / {p90} / {p99} / {top} ms",
            "p50 <= 10, p99 <= 50 ms",
        )
        table.row("(c) worker CPU per job, whole life", f"{jobs['worker_ms']:.1f} ms", "")
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in jobs["fal_by_kind"].items())
        table.row("(d) requests to fal per job", f"{jobs['fal_per_job']:.2f} ({kinds})", "")
        if "statements_per_job" in jobs:
            value = f"{jobs['statements_per_job']:.1f}"
            table.row("(e) the worker's statements to Postgres per job", value, "")


def parse_args(argv: Sequence[str] | None) -> Any:
    p = parser("gateway_bench", __doc__, profile=True)
    g = p.add_argument_group("1. accept throughput")
    g.add_argument("--concurrency", type=int, default=32, help="connections in flight [32]")
    add_load_flags(g, warmup=2.0, duration=8.0, per="round")
    g.add_argument("--client", choices=("raw", "httpx"), default="raw", help="[raw asyncio]")
    g.add_argument(
        "--interleave",
        type=float,
        default=None,
        metavar="SLICE_S",
        help="load baseline and gateway in turn, SLICE_S seconds each, for --rounds x "
        "--duration seconds (both servers up, on the same core), instead of rounds one after "
        "the other: both meet the machine of the same second",
    )
    g = p.add_argument_group("2. jobs: accept -> submit latency, CPU and fal requests per job")
    g.add_argument("--rate", type=float, default=10.0, help="jobs per second [10]")
    g.add_argument("--latency-warmup", type=float, default=3.0, help="seconds not counted [3]")
    g.add_argument("--latency-duration", type=float, default=20.0, help="measured seconds [20]")
    g.add_argument(
        "--runtime-s",
        type=float,
        default=0.0,
        help="the emulator's run time of every job (--run-time), for live-status costs: at most "
        "--emulator-concurrency jobs run at once [0: each completes within its submit]",
    )
    g.add_argument(
        "--webhooks",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="set FOLEY_PUBLIC_URL: fal answers by webhook [off: polling]",
    )
    g.add_argument("--rate-connections", type=int, default=16, help="client connections [16]")
    g.add_argument(
        "--drain-wait",
        type=float,
        default=30.0,
        help="seconds after the last POST to wait for the submits; later ones count as longer "
        "than this [30]",
    )
    g.add_argument(
        "--finish-wait",
        type=float,
        default=120.0,
        help="seconds to wait, once submitted, for every job to end [120]",
    )
    g.add_argument("--worker-concurrency", type=int, default=16)
    g.add_argument("--fal-concurrency", type=int, default=200)
    g.add_argument("--emulator-concurrency", type=int, default=40)
    g = p.add_argument_group("what to run")
    g.add_argument("--skip-throughput", action="store_true")
    g.add_argument("--skip-latency", action="store_true", help="skip measurement 2")
    g.add_argument(
        "--api-app",
        default=GATEWAY_APP,
        help=f"uvicorn factory of the gateway [{GATEWAY_APP}]: a variant under the same load",
    )
    g.add_argument(
        "--worker-cmd", default=None, help="[python -m app.entrypoints worker]; same purpose"
    )
    g.add_argument(
        "--count-statements",
        action="store_true",
        help="count the statements the worker sends to Postgres (its CPU figure a little high)",
    )
    return parse(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Run("gateway_bench", args, versions=VERSIONS) as run:
        db = run.database("foley_bench")
        print(settings_note(db))
        emu = None
        if not args.skip_latency:  # first: the API's JWKS and the worker point at it
            emu = fal.start_emulator(
                run.procs,
                run.tmp / "emulator",
                concurrency=args.emulator_concurrency,
                run_time_s=args.runtime_s,
            )
        env = gateway_env(db, run.tmp / "gateway", emu)
        api = Api(run.procs, env, run.out_dir, app=args.api_app)
        if args.webhooks:
            api.env["FOLEY_PUBLIC_URL"] = api.base
        api.start(args.server_core)
        key = api.new_tenant("bench").key
        video_url = "http://127.0.0.1:9/clip.mp4"
        if emu is not None:  # a real file on the emulator's CDN (fast mode does not fetch it)
            from tests.support.clips import make_bouncing_square

            clip = make_bouncing_square(run.tmp / "clip.mp4", duration_s=2.0, width=96, height=64)
            video_url = emu.upload(clip.path, "video/mp4")
        body = job_body(video_url)
        accept = None if args.skip_throughput else throughput(args, run, db, api, key, body)
        jobs = None if emu is None else life_cycle(args, run, db, api, key, emu, body)
        summary(accept, jobs)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
