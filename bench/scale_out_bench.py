"""Scale-out benchmark: jobs/s end to end, and what one job costs in each tier (API, worker and
Postgres CPU; statements and transactions), with 2 API processes and 1, 2, then 3 workers.

    .venv/bin/python bench/scale_out_bench.py                    # ~3 minutes
    .venv/bin/python bench/scale_out_bench.py --jobs 600 --workers 1,3

Two `foley api` behind a round-robin client, `foley worker` processes added one phase at a
time, all on one Postgres of the run's own: the system's installation with pg_stat_statements
when there is one (statements per job, the busiest listed), else the embedded server (then
transactions per job only). The emulator is fal in fast mode (outputs cached, each request
completing within its submit unless `--run-time`), with more slots than the jobs in flight,
so the gateway is what is measured. Each phase POSTs `--jobs` jobs (three tenants in turn,
`--concurrency` at once) and ends when all are terminal: jobs/s is jobs over that time, and
the CPU of every process of a tier over it, divided by the jobs, is the tier's cost per job
(a whole life: accept, dispatch, follow-up, result fetched and measured, events, settlement).
See bench/README.md, and docs/scaling.md for the capacity model built on these figures.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import fal, report, scale
from harness.database import (
    Database,
    StatementsPostgres,
    connect,
    postgres_cpu,
    settings_note,
    sql,
    system_postgres_bin,
)
from harness.meters import CpuMeter, cpu_of
from harness.procs import BenchError
from harness.run import Run, parse, parser

VERSIONS = ("fastapi", "uvicorn", "sqlalchemy", "asyncpg")
TENANTS = 3
# The bench's own statements (waiting for the jobs), left out of the figures.
MARK = "/* scale_out_bench */"


def job_body(video_url: str, i: int) -> dict[str, Any]:
    return {
        "model": "thinksound-audio",
        "input": {"video_url": video_url, "seed": i},
        "metadata": {"bench": "scale_out"},
    }


async def wait_terminal(db: Database, ids: list[uuid.UUID], within_s: float) -> tuple[int, int]:
    """Poll until every job is terminal; (jobs not terminal, polls made)."""
    conn = await connect(db)
    polls = 0
    try:
        deadline = time.monotonic() + within_s
        while True:
            polls += 1
            left = await conn.fetchval(
                f"{MARK} SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) "
                "AND status NOT IN ('succeeded', 'failed', 'canceled', 'aborted')",
                ids,
            )
            if left == 0 or time.monotonic() > deadline:
                return left, polls
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def create_all(
    cluster: scale.Cluster, clients: list[scale.RoundRobin], video_url: str, n: int, at_once: int
) -> tuple[list[uuid.UUID], Counter[int]]:
    """POST n jobs, the tenants in turn, each request to the next API, `at_once` in flight."""
    ids: list[uuid.UUID] = []
    answers: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            rr = clients[i % len(clients)]
            r = await rr.next().post("/v1/jobs", json=job_body(video_url, i))
            answers[r.status_code] += 1
            if r.status_code == 202:
                ids.append(uuid.UUID(r.json()["id"]))

    await asyncio.gather(*(sender() for _ in range(at_once)))
    return ids, answers


async def db_counters(db: Database) -> dict[str, int]:
    rows = await sql(
        db,
        f"{MARK} SELECT xact_commit + xact_rollback AS xacts, tup_inserted AS ins, "
        "tup_updated AS upd, tup_deleted AS del, tup_returned + tup_fetched AS reads "
        "FROM pg_stat_database WHERE datname = current_database()",
    )
    return dict(rows[0])


async def statements(db: Database) -> list[Any]:
    """pg_stat_statements of this database since the last reset, the bench's own left out."""
    return await sql(
        db,
        f"{MARK} SELECT calls, total_exec_time AS ms, rows, toplevel, "
        "regexp_replace(query, '\\s+', ' ', 'g') AS query FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT LIKE '%scale_out_bench%' ORDER BY calls DESC",
    )


async def phase(
    args: Any,
    cluster: scale.Cluster,
    clients: list[scale.RoundRobin],
    video_url: str,
    workers: int,
    *,
    with_statements: bool,
    table: report.Table,
) -> list[Any]:
    db = cluster.db
    await cluster.start_workers(workers - len(cluster.workers))
    # Warm-up: every process has served a few jobs (imports, pools, prepared statements).
    ids, _ = await create_all(cluster, clients, video_url, 6 * workers, 6)
    await wait_terminal(db, ids, 120)
    pids = cluster.pids()
    emu_pid = cluster.emu.process.pid
    meter = CpuMeter(
        {
            "api": lambda: sum(cpu_of(p) for p in pids["api"]),
            "worker": lambda: sum(cpu_of(p) for p in pids["worker"]),
            "postgres": lambda: postgres_cpu(db),
            "emulator": lambda: cpu_of(emu_pid),
        }
    )
    if with_statements:
        await sql(db, f"{MARK} SELECT pg_stat_statements_reset()")
    before = await db_counters(db)
    meter.start()
    ids, answers = await create_all(cluster, clients, video_url, args.jobs, args.concurrency)
    left, polls = await wait_terminal(db, ids, args.settle_s)
    meter.stop()
    after = await db_counters(db)
    if left:
        raise BenchError(f"{left} of {len(ids)} jobs not terminal after {args.settle_s:g} s")
    rows = await sql(
        db,
        f"{MARK} SELECT status::text AS s, count(*) AS n FROM jobs WHERE id = ANY($1::uuid[]) "
        "GROUP BY 1",
        ids,
    )
    n = len(ids)
    # the bench's own: its polls and the two counter reads (one transaction each)
    xacts = (after["xacts"] - before["xacts"] - polls - 2) / n
    stmts = await statements(db) if with_statements else []
    per_job = {k: meter.used[k] * 1000 / n for k in meter.used}
    table.row(
        workers,
        n,
        meter.wall,
        n / meter.wall,
        per_job["api"],
        per_job["worker"],
        per_job["postgres"],
        per_job["emulator"],
        sum(s["calls"] for s in stmts if s["toplevel"]) / n if stmts else None,
        sum(s["calls"] for s in stmts if not s["toplevel"]) / n if stmts else None,
        xacts,
        (after["ins"] - before["ins"]) / n,
        (after["upd"] - before["upd"]) / n,
        meter.share("api") + meter.share("worker") + meter.share("postgres"),
        ", ".join(f"{r['s']} {r['n']}" for r in rows)
        + ("" if set(answers) == {202} else f"; answers {dict(answers)}"),
    )
    return stmts


async def bench(run: Run, args: Any) -> None:
    bin_dir = None if args.embedded else system_postgres_bin()
    own: StatementsPostgres | None = None
    if bin_dir is not None:
        root = Path(tempfile.gettempdir()) / f"foley-scale-pg-{os.getuid()}-{os.getpid()}"
        own = await asyncio.to_thread(StatementsPostgres, root, bin_dir)
        db = await asyncio.to_thread(own.database, f"scale_{os.getpid()}")
        print(f"database  {db.url} (system Postgres, {bin_dir}, pg_stat_statements)")
    else:
        db = await asyncio.to_thread(run.database)
        print("          (no system Postgres with pg_stat_statements: statements not counted)")
    try:
        print(await asyncio.to_thread(settings_note, db))
        emu = await asyncio.to_thread(
            fal.start_emulator,
            run.procs,
            run.tmp / "emulator",
            fast=True,
            concurrency=args.slots,
            run_time_s=args.run_time,
        )
        from tests.support.clips import make_bouncing_square

        clip = make_bouncing_square(run.tmp / "clip.mp4", duration_s=4.0, width=160, height=120)
        video_url = await asyncio.to_thread(emu.upload, clip.path, "video/mp4")
        cluster = scale.Cluster(
            run.procs,
            run.out_dir,
            db,
            emu,
            apis=args.apis,
            settings={"FOLEY_FAL_CONCURRENCY": str(args.slots)},
        )
        await cluster.start_apis()
        tenants = [
            await asyncio.to_thread(cluster.new_tenant, f"scale-{i}") for i in range(TENANTS)
        ]
        clients = [cluster.client(t) for t in tenants]
        print(
            f"\n== {args.apis} APIs (round robin), workers added phase by phase; "
            f"{args.jobs} jobs per phase, {args.concurrency} creates at once, {TENANTS} tenants; "
            f"fal: emulator fast mode, {args.slots} slots, run time {args.run_time:g} s"
        )
        table = report.Table(
            ("workers", "7"),
            ("jobs", "5"),
            ("wall s", "6.1f"),
            ("jobs/s", "6.1f"),
            ("API ms/job", "10.2f"),
            ("worker ms/job", "13.2f"),
            ("PG ms/job", "9.2f"),
            ("emu ms/job", "10.2f"),
            ("stmts/job", "9.1f"),
            ("nested/job", "10.1f"),
            ("xacts/job", "9.1f"),
            ("ins/job", "7.1f"),
            ("upd/job", "7.1f"),
            ("cores busy", "10.2f"),
            ("jobs by status", "<"),
        )
        stmts: list[Any] = []
        try:
            for n in args.workers:
                stmts = await phase(
                    args,
                    cluster,
                    clients,
                    video_url,
                    n,
                    with_statements=own is not None,
                    table=table,
                )
        finally:
            for c in clients:
                await c.aclose()
            await cluster.stop()
        if stmts:
            print(f"\n== statements per job, the busiest, last phase ({args.workers[-1]} workers)")
            top = report.Table(
                ("calls/job", "9.2f"),
                ("ms/job", "7.3f"),
                ("rows/call", "9.1f"),
                ("level", "<6"),
                ("statement", "<"),
            )
            for s in stmts[: args.top]:
                top.row(
                    s["calls"] / args.jobs,
                    s["ms"] / args.jobs,
                    s["rows"] / max(1, s["calls"]),
                    "top" if s["toplevel"] else "nested",
                    s["query"][:100],
                )
            print(
                "\n   the most time (execution includes waiting for a lock: serialization points)"
            )
            slow = report.Table(
                ("ms/job", "7.3f"), ("calls/job", "9.2f"), ("ms/call", "8.3f"), ("statement", "<")
            )
            for s in sorted(stmts, key=lambda s: -s["ms"])[:5]:
                slow.row(
                    s["ms"] / args.jobs,
                    s["calls"] / args.jobs,
                    s["ms"] / max(1, s["calls"]),
                    s["query"][:100],
                )
            total = sum(s["calls"] for s in stmts if s["toplevel"])
            nested = sum(s["calls"] for s in stmts if not s["toplevel"])
            top.note(
                f"{len(stmts)} distinct statements; per job {total / args.jobs:.1f} sent by the "
                f"gateway (BEGIN and COMMIT included) and {nested / args.jobs:.1f} run inside "
                "them (triggers, foreign-key checks); "
                f"execution time {sum(s['ms'] for s in stmts) / args.jobs:.2f} ms per job"
            )
    finally:
        if own is not None:
            await asyncio.to_thread(own.close)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("scale_out_bench", __doc__)
    g = p.add_argument_group("scale-out")
    g.add_argument("--jobs", type=int, default=300, help="jobs per phase [300]")
    g.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 3],
        help="workers in each phase, ascending (added, never removed) [1,2,3]",
    )
    g.add_argument("--apis", type=int, default=2, help="API processes [2]")
    g.add_argument("--concurrency", type=int, default=16, help="creates in flight [16]")
    g.add_argument("--slots", type=int, default=64, help="the fal account's concurrency [64]")
    g.add_argument("--run-time", type=float, default=0.0, help="s each request runs at fal [0]")
    g.add_argument("--settle-s", type=float, default=300.0, help="a phase's deadline [300]")
    g.add_argument("--top", type=int, default=15, help="statements listed [15]")
    g.add_argument("--embedded", action="store_true", help="the embedded Postgres (no statements)")
    args = parse(p, argv)
    if args.workers != sorted(args.workers) or args.workers[0] < 1:
        p.error("--workers: ascending counts, at least 1")
    with Run("scale_out_bench", args, versions=VERSIONS) as run:
        asyncio.run(bench(run, args))
        return 0
    return run.exit_code or 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
