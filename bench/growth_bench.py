"""Growth benchmark: the list, event and usage reads as the big tables grow, on the schema of
migration 0011 (`job_events` partitioned by month, jobs indexed by tenant and status) and on the
one before it (0010).

    .venv/bin/python bench/growth_bench.py                             # 30k then 300k jobs, ~10 min
    .venv/bin/python bench/growth_bench.py --jobs 50000,200000 --events-per-job 9

Two databases on an embedded Postgres of the bench's own: one migrated to head (0011), one to
0010. Both get the same year of synthetic history, generated in SQL and loaded in steps (each
`--jobs` figure is a cumulative size): jobs of `--tenants` tenants (the measured one holds
1/`--tenants` of them) spread evenly over the last 12 months, `--events-per-job` events each
(a succeeded job has about nine), one settled ledger row each and the daily rollups
(`app.usage.rollups.rebuild_rollups`). After each step (VACUUM ANALYZE), on one connection with
prepared statements, p50 and p95 of: the tenant's first page of jobs, a page six months back
(keyset), a page filtered by a status 1 job in 50 has, by one none has, by a model none used;
a job's events for random jobs of the year, as the gateway reads them (with the job's creation
time: one partition) and without it (every partition probed); the tenant's usage summary for
one month (`app.usage.service.summary`, in process); and the first 1,000 rows of a month's CSV
export. Then the sizes of the tables and of the largest partition. See bench/README.md and
docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import report
from harness.database import Database, connect, settings_note, sql
from harness.run import Run, parse, parser

PG_ROOT = Path(tempfile.gettempdir()) / f"foley-growth-bench-pg-{os.getuid()}"
VERSIONS = ("sqlalchemy", "asyncpg")
MODEL = "fal-ai/thinksound"
PRICE_ID = "00000000-0000-4000-8000-000000000002"  # ThinkSound's, seeded by migration 0002
EVENT_TYPES = [
    "job.created",
    "job.submitting",
    "job.started",
    "job.processing",
    "job.logs",
    "job.logs",
    "job.logs",
    "job.logs",
    "job.succeeded",
]


# Jobs g in [lo, hi]: tenant g % T (tenant 0 is the measured one), created at `start` + g slots
# of `step` seconds; 1 in 50 failed (the rare status a filtered list looks for); their events and
# their ledger rows in the same statement.
def load_sql(partitioned: bool) -> str:
    key = ", job_created_at" if partitioned else ""
    return f"""
WITH j AS (
    INSERT INTO jobs (id, tenant_id, model, endpoint, status, input, upstream_payload, metadata,
                      submit_state, submit_attempts, upstream_completed, poll_count, event_seq,
                      upstream_request_id, created_at, updated_at, completed_at)
    SELECT gen_random_uuid(), ($1::uuid[])[1 + g % $2], '{MODEL}', '{MODEL}',
           CASE WHEN (g / $2) % 50 = 7 THEN 'failed' ELSE 'succeeded' END::job_status,
           '{{"video_url": "https://videos.example/clip.mp4", "prompt": "a ball"}}',
           '{{"video_url": "https://videos.example/clip.mp4"}}', '{{"order": "42"}}',
           'submitted', 1, true, 0, $3, 'req-' || g, t, t + interval '20 seconds',
           t + interval '20 seconds'
    FROM (SELECT g, $4::timestamptz + g * $5::float8 * interval '1 second' AS t
          FROM generate_series($6::bigint, $7::bigint) AS g) AS s
    RETURNING id, tenant_id, status, upstream_request_id, created_at, completed_at
), e AS (
    INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at{key})
    SELECT j.id, j.tenant_id, s, ($8::text[])[s], jsonb_build_object('status', 'processing'),
           j.created_at + s * interval '2 seconds'{key and ", j.created_at"}
    FROM j CROSS JOIN generate_series(1, $3::int) AS s
)
INSERT INTO usage_records (id, upstream_request_id, tenant_id, job_id, model, endpoint, unit,
    units, unit_price_micros, price_id, estimated_cost_micros, cost_nanos, cost_micros, status,
    outcome, flagged, orphan, job_status, created_at, settled_at)
SELECT gen_random_uuid(), j.upstream_request_id, j.tenant_id, j.id, '{MODEL}', '{MODEL}',
       'compute_second', 8, 1000, '{PRICE_ID}'::uuid, 10000, 8000000, 8000, 'settled',
       'succeeded', false, false, j.status::text, j.created_at, j.completed_at
FROM j
"""


LIST_COLUMNS = "id, tenant_id, status, model, created_at"
READS = {
    "list: first page": (
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE tenant_id = $1 "
        "ORDER BY created_at DESC, id DESC LIMIT 21"
    ),
    "list: page 6 months back": (
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE tenant_id = $1 AND (created_at, id) < ($2, $3) "
        "ORDER BY created_at DESC, id DESC LIMIT 21"
    ),
    "list: status=failed (1 job in 50)": (
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE tenant_id = $1 AND status = 'failed' "
        "ORDER BY created_at DESC, id DESC LIMIT 21"
    ),
    "list: status=canceled (none)": (
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE tenant_id = $1 AND status = 'canceled' "
        "ORDER BY created_at DESC, id DESC LIMIT 21"
    ),
    "list: model=kling (none)": (
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE tenant_id = $1 "
        "AND model = 'fal-ai/kling-video/video-to-audio' "
        "ORDER BY created_at DESC, id DESC LIMIT 21"
    ),
    # what app.jobs.store.events_for_tenant sends
    "events of a job (with its created_at)": (
        "SELECT id, job_id, seq, type, data, created_at FROM job_events WHERE tenant_id = $1 "
        "AND job_id = $2 AND seq > 0 AND job_created_at = $3 ORDER BY seq LIMIT 101"
    ),
    "events of a job": (
        "SELECT id, job_id, seq, type, data, created_at FROM job_events WHERE tenant_id = $1 "
        "AND job_id = $2 AND seq > 0 ORDER BY seq LIMIT 101"
    ),
    "export: first 1,000 rows of a month": (
        "SELECT id, upstream_request_id, job_id, model, units, cost_nanos, created_at "
        "FROM usage_records WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 "
        "ORDER BY created_at, id LIMIT 1000"
    ),
}


async def make_databases(run: Run) -> dict[str, Database]:
    """`0011` (head: job_events partitioned, the status index) and `0010` (before it) on the
    bench's own server."""
    from app.db.embedded import start_embedded_postgres
    from app.db.migrate import upgrade
    from tests.support.database import create_database

    PG_ROOT.mkdir(mode=0o755, exist_ok=True)
    server = await asyncio.to_thread(start_embedded_postgres, PG_ROOT, database="postgres")
    out = {}
    for label, revision in (("0011", "head"), ("0010", "0010")):
        name = f"foley_growth_r{label}_{os.getpid()}"
        url = await create_database(server, name, migrate=False)
        await asyncio.to_thread(upgrade, url, revision)
        db = Database(server_url=server, url=url, name=name, pg_root=PG_ROOT)
        if revision == "head":
            # The year's months, as the workers' housekeeping would have made them month by
            # month (the migration makes them from the oldest job's month: none yet here).
            await sql(
                db,
                "SELECT job_events_add_partition(m) FROM generate_series("
                "now() - interval '13 months', now(), interval '1 month') AS m",
            )
        run.databases.append(db)
        out[label] = db
    return out


async def tenants(db: Database, n: int) -> list[uuid.UUID]:
    rows = await sql(db, "SELECT id FROM tenants ORDER BY name")
    if rows:
        return [r["id"] for r in rows]
    ids = [uuid.uuid4() for _ in range(n)]
    conn = await connect(db)
    try:
        await conn.executemany(
            "INSERT INTO tenants (id, name) VALUES ($1, $2)",
            [(t, f"growth-{i:02d}") for i, t in enumerate(ids)],
        )
    finally:
        await conn.close()
    return ids


async def load(
    db: Database, partitioned: bool, ids: list[uuid.UUID], lo: int, hi: int, args: Any, span: tuple
) -> float:
    """Jobs lo..hi, their events and ledger rows, then the rollups and VACUUM ANALYZE; seconds.
    Job g is created at span[0] + g * span[1] seconds."""
    start, step = span
    t0 = time.perf_counter()
    chunk = 50_000
    bounds = [*range(lo, hi + 1, chunk), hi + 1]
    pieces = list(zip(bounds[:-1], [b - 1 for b in bounds[1:]], strict=True))
    statement = load_sql(partitioned)

    async def piece(a: int, b: int) -> None:
        conn = await connect(db)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(
                statement, ids, len(ids), args.events_per_job, start, step, a, b, EVENT_TYPES
            )
        finally:
            await conn.close()

    for i in range(0, len(pieces), 2):  # two connections at a time
        await asyncio.gather(*(piece(a, b) for a, b in pieces[i : i + 2]))
    await rollups(db, span[0])
    conn = await connect(db)
    try:
        for table in ("jobs", "job_events", "usage_records", "usage_daily"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def rollups(db: Database, start: datetime) -> None:
    from app.db.engine import create_engine, create_sessionmaker
    from app.usage.rollups import rebuild_rollups

    engine = create_engine(db.url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await rebuild_rollups(session, start.date(), date.today() + timedelta(days=2))
    finally:
        await engine.dispose()


async def timed(conn: Any, statement: str, params: list[tuple], warm: int = 5) -> list[float]:
    ps = await conn.prepare(statement)
    for p in params[:warm]:
        await ps.fetch(*p)
    out = []
    for p in params:
        t0 = time.perf_counter()
        await ps.fetch(*p)
        out.append(time.perf_counter() - t0)
    return sorted(out)


async def measure(db: Database, label: str, tenant: uuid.UUID, args: Any, table: Any) -> None:
    conn = await connect(db)
    try:
        now = datetime.now(UTC)
        cursor = await conn.fetchrow(
            "SELECT created_at, id FROM jobs WHERE tenant_id = $1 AND created_at < $2 "
            "ORDER BY created_at DESC, id DESC LIMIT 1",
            tenant,
            now - timedelta(days=182),
        )
        await conn.execute("SELECT setseed(0.7)")
        sample = await conn.fetch(
            "SELECT id, created_at FROM jobs WHERE tenant_id = $1 ORDER BY random() LIMIT $2",
            tenant,
            args.samples,
        )
        month = (now - timedelta(days=62)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        month_end = (month + timedelta(days=32)).replace(day=1)
        n = args.samples
        params: dict[str, list[tuple]] = {
            "list: first page": [(tenant,)] * n,
            "list: page 6 months back": [(tenant, cursor["created_at"], cursor["id"])] * n,
            "list: status=failed (1 job in 50)": [(tenant,)] * n,
            "list: status=canceled (none)": [(tenant,)] * n,
            "list: model=kling (none)": [(tenant,)] * n,
            "events of a job (with its created_at)": [
                (tenant, r["id"], r["created_at"]) for r in sample
            ],
            "events of a job": [(tenant, r["id"]) for r in sample],
            "export: first 1,000 rows of a month": [(tenant, month, month_end)] * max(5, n // 10),
        }
        for name, statement in READS.items():
            if "with its created_at" in name and label == "0010":
                continue
            lat = await timed(conn, statement, params[name])
            table.row(label, name, *(report.pct(lat, p) * 1000 for p in (50, 95)), len(lat))
        lat = await summaries(db, tenant, month.date(), month_end.date(), n)
        table.row(label, "usage summary of a month (in process)", lat[0], lat[1], n)
    finally:
        await conn.close()


async def summaries(db: Database, tenant: uuid.UUID, start: date, end: date, n: int) -> tuple:
    from app.db.engine import create_engine, create_sessionmaker
    from app.usage import service

    engine = create_engine(db.url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            out = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                await service.summary(
                    session, start=start, end=end, group_by="day", tenant_id=tenant
                )
                if i >= 5:
                    out.append(time.perf_counter() - t0)
    finally:
        await engine.dispose()
    out.sort()
    return report.pct(out, 50) * 1000, report.pct(out, 95) * 1000


async def sizes(db: Database) -> str:
    row = (
        await sql(
            db,
            "SELECT pg_size_pretty(pg_total_relation_size('jobs')) AS jobs, "
            "(SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
            " WHERE c.relname LIKE 'job_events%' AND c.relkind = 'r') AS events, "
            "(SELECT max(pg_total_relation_size(c.oid)) FROM pg_class c "
            " WHERE c.relname LIKE 'job_events%' AND c.relkind = 'r') AS largest, "
            "pg_size_pretty(pg_total_relation_size('usage_records')) AS ledger, "
            "(SELECT count(*) FROM job_events) AS n_events",
        )
    )[0]
    largest = f"{row['largest'] / 2**20:,.0f} MB"
    return (
        f"jobs {row['jobs']}, job_events {row['events']} ({row['n_events']:,} rows; largest "
        f"table or partition {largest}), usage_records {row['ledger']}"
    )


async def bench(run: Run, args: Any) -> None:
    dbs = await make_databases(run)
    print(await asyncio.to_thread(settings_note, dbs["0011"]))
    year_start = datetime.now(UTC) - timedelta(days=365)
    print(
        f"\n== a year of history, {args.tenants} tenants (the measured one: 1/{args.tenants} "
        f"of the jobs), {args.events_per_job} events and 1 ledger row per job; "
        f"{args.samples} samples per line (events: random jobs of the year)"
    )
    table = report.Table(
        ("schema", "<6"), ("read", "<38"), ("p50 ms", "7.3f"), ("p95 ms", "7.3f"), ("n", "5d")
    )
    loaded = 0
    for size in args.jobs:
        # Each step spreads its new jobs evenly over the same year (between the ones before):
        # a larger size is a busier year, not a longer one.
        step = 365 * 86400 / (size - loaded)
        span = (year_start - timedelta(seconds=(loaded + 0.5) * step), step)
        tenant_ids = {}
        for label, db in dbs.items():
            tenant_ids[label] = await tenants(db, args.tenants)
            took = await load(db, label == "0011", tenant_ids[label], loaded + 1, size,
                              args, span)  # fmt: skip
            print(f"   {label}: loaded to {size:,} jobs in {took:.0f} s", flush=True)
        for label, db in dbs.items():
            await measure(db, label, tenant_ids[label][0], args, table)
        for label, db in dbs.items():
            table.note(f"{label} at {size:,} jobs: {await sizes(db)}")
        loaded = size
    if args.time_upgrade:
        await time_upgrade(dbs["0010"])


async def time_upgrade(db: Database) -> None:
    """Migration 0011 on the 0010 database as loaded: how long an installation of this size
    waits (the copy of job_events holds its table's lock throughout)."""
    from app.db.migrate import upgrade

    n = (await sql(db, "SELECT count(*) AS n FROM job_events"))[0]["n"]
    t0 = time.perf_counter()
    await asyncio.to_thread(upgrade, db.url, "head")
    took = time.perf_counter() - t0
    print(
        f"\n== migration 0011 on the 0010 database: {took:.1f} s for {n:,} job_events rows "
        f"({n / took:,.0f} rows/s, the list indexes included)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("growth_bench", __doc__)
    g = p.add_argument_group("growth")
    g.add_argument(
        "--jobs",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[30_000, 300_000],
        help="cumulative sizes, ascending [30000,300000]",
    )
    g.add_argument("--events-per-job", type=int, default=9, help="[9]")
    g.add_argument("--tenants", type=int, default=10, help="[10]")
    g.add_argument("--samples", type=int, default=200, help="timed reads per line [200]")
    g.add_argument(
        "--time-upgrade",
        action="store_true",
        help="at the end, time migration 0011 on the 0010 database",
    )
    args = parse(p, argv)
    if args.events_per_job > len(EVENT_TYPES):
        p.error(f"--events-per-job: at most {len(EVENT_TYPES)}")
    with Run("growth_bench", args, versions=VERSIONS) as run:
        asyncio.run(bench(run, args))
        return 0
    return run.exit_code or 1


if __name__ == "__main__":
    sys.exit(main())
