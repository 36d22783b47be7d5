"""Usage benchmark: reading usage over a 1M-row ledger, and what budgets + rate limits cost on
`POST /v1/jobs`.

    .venv/bin/python bench/usage_bench.py             # both measurements, ~6 minutes
    .venv/bin/python bench/usage_bench.py --profile   # + py-spy of the export and the create path
    .venv/bin/python bench/usage_bench.py --help      # sizes, durations, concurrency, variants

Setup: a database on an embedded server of its own (loading a million rows never disturbs
gateway_bench's), ONE uvicorn API (no worker), tenants through the admin API, the ledger
generated in SQL (indexes dropped for the load and re-created from their own definitions), the
rollups by `app.usage.rollups.rebuild_rollups`, checked equal to the ledger.
1. Reads for the middle month: `/v1/usage` and `/v1/admin/usage` (p50/p95/max, the total
   checked), the services' SQL under EXPLAIN ANALYZE, then the CSV export (time, rows/s, the
   API's memory and CPU, its connection afterwards).
2. Creates (Kling body), closed loop at each `--concurrency`, API on core 0, load on core 1:
   OFF, ON (huge budget + rate limit), budget only, rate limit only, OFF/ON over 8 tenants, with
   pg_stat_activity sampled for lock waits and stalls.
See bench/README.md for the details and the figures of earlier runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from harness import report
from harness.database import (
    Database,
    PgActivity,
    connect,
    postgres_cpu,
    run_sql,
    settings_note,
)
from harness.gateway import ADMIN, GATEWAY_APP, Api, Tenant, gateway_env
from harness.load import LoadSpec, run_load
from harness.meters import CpuMeter, RssSampler, cpu_of
from harness.procs import BenchError
from harness.profile import profiling
from harness.run import Run, add_load_flags, parse, parser

# A server of its own: loading a million rows on gateway_bench's would skew its figures.
PG_ROOT = Path(tempfile.gettempdir()) / f"foley-usage-bench-pg-{os.getuid()}"
SUMMARY_TARGET_MS = 50.0
VERSIONS = ("fastapi", "uvicorn", "sqlalchemy", "asyncpg")
KLING, THINKSOUND, THINKSOUND_AUDIO = (
    "fal-ai/kling-video/video-to-audio",
    "fal-ai/thinksound",
    "fal-ai/thinksound/audio",
)
# The prices seeded by migration 0002 (their ids are fixed there).
PRICE_IDS = {
    KLING: "00000000-0000-4000-8000-000000000001",
    THINKSOUND: "00000000-0000-4000-8000-000000000002",
    THINKSOUND_AUDIO: "00000000-0000-4000-8000-000000000003",
}
KLING_BODY = {
    "model": "kling-video-to-audio",
    "input": {"video_url": "http://127.0.0.1:9/clip.mp4", "prompt": "footsteps on gravel"},
    "metadata": {"bench": "usage_bench"},
}
HUGE_BUDGET = {"budget_usd": "1000000000.00"}  # 1e9 USD: nothing is ever refused
HUGE_RATE = {"rate_limit_per_minute": 1_000_000_000}  # never hit
POOL_TIMEOUT = "QueuePool limit of size"
GC_WARNING = "SAWarning: The garbage collector is trying to clean up non-checked-in connection"
MINE = "datname = current_database() AND application_name = 'foley'"


def month_add(d: date, months: int) -> date:
    m = d.month - 1 + months
    return date(d.year + m // 12, m % 12 + 1, 1)


def midnight(d: date) -> datetime:
    return datetime.combine(d, datetime.min.time(), tzinfo=UTC)


# --- setup: the ledger (SQL) and the rollups (rebuild_rollups) -----------------------------------

# Rows g in [lo, hi] of 1..n_total (one range per loading connection). Row g belongs to the
# measured tenant when g % k < main_share and to other tenant (g % k - main_share) otherwise, so
# tenants interleave as in a shared ledger and the counts are exact. created_at rises with g (one
# slot of span/n_total each, jittered inside it).
LEDGER_SQL = f"""
INSERT INTO usage_records (
    id, upstream_request_id, tenant_id, job_id, model, endpoint, unit, units, unit_price_micros,
    price_id, estimated_cost_micros, cost_micros, cost_nanos, status, outcome, flagged, orphan,
    job_status, created_at, settled_at)
SELECT gen_random_uuid(), gen_random_uuid()::text, tenant_id, NULL, model, model, unit, units,
       price, price_id, est, round(units * price)::bigint, round(units * price * 1000)::bigint,
       'settled', outcome,
       outcome = 'upstream_422', false,
       CASE WHEN outcome = 'succeeded' THEN 'succeeded'
            WHEN outcome LIKE 'canceled%' THEN 'canceled' ELSE 'failed' END,
       created_at, created_at + settle_s * interval '1 second'
FROM (
    SELECT s.*,
           CASE WHEN model = '{KLING}' THEN 'video' ELSE 'compute_second' END AS unit,
           CASE WHEN model = '{KLING}' THEN 35000 ELSE 1000 END AS price,
           CASE model WHEN '{KLING}' THEN '{PRICE_IDS[KLING]}'::uuid
                      WHEN '{THINKSOUND}' THEN '{PRICE_IDS[THINKSOUND]}'::uuid
                      ELSE '{PRICE_IDS[THINKSOUND_AUDIO]}'::uuid END AS price_id,
           CASE WHEN model = '{KLING}' THEN 35000 ELSE 10000 END AS est,
           CASE WHEN model = '{KLING}' THEN
                    CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END::numeric
                WHEN outcome = 'succeeded' THEN round((2 + ru * 38)::numeric, 6)
                WHEN outcome = 'canceled_running' THEN round((ru * 10)::numeric, 6)
                ELSE 0::numeric END AS units
    FROM (
        SELECT CASE WHEN g % $1 < $2 THEN $3::uuid
                    ELSE ($4::uuid[])[1 + g % $1 - $2] END AS tenant_id,
               $5::timestamptz + ((g - 1) + r0) * $6::float8 * interval '1 second' AS created_at,
               CASE WHEN rm < 0.50 THEN '{KLING}'
                    WHEN rm < 0.85 THEN '{THINKSOUND}' ELSE '{THINKSOUND_AUDIO}' END AS model,
               CASE WHEN ro < 0.92 THEN 'succeeded' WHEN ro < 0.96 THEN 'upstream_5xx'
                    WHEN ro < 0.98 THEN 'upstream_422' WHEN ro < 0.99 THEN 'canceled_queued'
                    ELSE 'canceled_running' END AS outcome,
               ru, 20 + rd * 280 AS settle_s
        FROM (SELECT g, random() AS r0, random() AS rm, random() AS ro, random() AS ru,
                     random() AS rd
              FROM generate_series($7::bigint, $8::bigint) AS g) AS raw
    ) AS s
) AS t
"""
# usage_records' constraints (p/u/f) and plain indexes (i): (name, kind, definition)
SCHEMA_SQL = (
    "SELECT conname AS name, contype::text AS kind, pg_get_constraintdef(oid) AS def "
    "FROM pg_constraint WHERE conrelid = 'usage_records'::regclass AND contype IN "
    "('p', 'u', 'f') UNION ALL SELECT c.relname, 'i', pg_get_indexdef(i.indexrelid) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = "
    "'usage_records'::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE "
    "k.conindid = i.indexrelid) ORDER BY 1"
)


def load_ledger(
    args: Any, db: Database, main: Tenant, others: list[Tenant], quarter: tuple
) -> None:
    """The ledger by INSERT ... SELECT, the rollups by rebuild_rollups, VACUUM ANALYZE."""
    rows, other_rows, jobs = args.rows, args.other_rows, args.load_jobs
    if others and rows % other_rows:
        raise BenchError("--rows must be a multiple of --other-rows")
    main_share = rows // other_rows if others else 1  # a cycle of k slots, one per other
    k, total = main_share + len(others), rows + other_rows * len(others)
    start, end = quarter
    span_s = (midnight(end) - midnight(start)).total_seconds()
    other_ids = [uuid.UUID(o.id) for o in others] or [uuid.UUID(main.id)]

    async def insert_range(i: int, lo: int, hi: int) -> None:
        conn = await connect(db)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(f"SELECT setseed({0.42 + i / 100})")
            await conn.execute(
                LEDGER_SQL,
                k,
                main_share,
                uuid.UUID(main.id),
                other_ids,
                midnight(start),
                span_s / total,
                lo,
                hi,
            )
        finally:
            await conn.close()

    async def load() -> dict[str, float]:
        times: dict[str, float] = {}
        conn = await connect(db)
        try:
            await conn.execute("SET maintenance_work_mem = '256MB'")
            # Bulk-load pattern: drop the table's indexes, constraints and foreign keys, insert,
            # re-create them from their own definitions (checked identical afterwards).
            before = [tuple(r) for r in await conn.fetch(SCHEMA_SQL)]
            t0 = time.perf_counter()
            for name, kind, _ in before:
                if kind != "i":
                    await conn.execute(f'ALTER TABLE usage_records DROP CONSTRAINT "{name}"')
            for name, kind, _ in before:
                if kind == "i":
                    await conn.execute(f'DROP INDEX "{name}"')
            bounds = [1 + total * j // jobs for j in range(jobs + 1)]
            await asyncio.gather(
                *(insert_range(j, bounds[j], bounds[j + 1] - 1) for j in range(jobs))
            )
            times["insert"], t0 = time.perf_counter() - t0, time.perf_counter()
            for order in ("p", "u", "i", "f"):
                for name, kind, definition in (b for b in before if b[1] == order):
                    await conn.execute(
                        definition
                        if kind == "i"
                        else f'ALTER TABLE usage_records ADD CONSTRAINT "{name}" {definition}'
                    )
            times["indexes"] = time.perf_counter() - t0
            if [tuple(r) for r in await conn.fetch(SCHEMA_SQL)] != before:
                raise BenchError("usage_records' indexes/constraints differ after the load")
            t0 = time.perf_counter()
            await rebuild_rollups(db, start, month_add(end, 1))
            times["rollups"], t0 = time.perf_counter() - t0, time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) usage_records")
            await conn.execute("VACUUM (ANALYZE) usage_daily")
            times["vacuum"] = time.perf_counter() - t0
        finally:
            await conn.close()
        return times

    print(
        f"\n== setup: loading {total:,} ledger rows ({rows:,} for the measured tenant, "
        f"{other_rows:,} for each of {len(others)} other(s)), {start} .. {end} (exclusive)"
    )
    t = asyncio.run(load())
    print(
        f"   INSERT ... SELECT generate_series on {jobs} connection(s), indexes and constraints "
        f"dropped: {t['insert']:.1f} s ({total / t['insert']:,.0f} rows/s); re-created "
        f"(identical): {t['indexes']:.1f} s; rebuild_rollups: {t['rollups']:.1f} s; "
        f"VACUUM ANALYZE: {t['vacuum']:.1f} s"
    )


async def rebuild_rollups(db: Database, start: date, end: date) -> None:
    from app.db.engine import create_engine, create_sessionmaker
    from app.usage.rollups import rebuild_rollups

    engine = create_engine(db.url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await rebuild_rollups(session, start, end)
    finally:
        await engine.dispose()


LEDGER_FACTS = {  # name -> (statement, its parameters: none, the tenant, + a time range / month)
    "per_tenant": (
        "SELECT tenant_id::text AS t, count(*) AS n FROM usage_records GROUP BY 1 ORDER BY 2 DESC",
        "",
    ),
    "by_model": (
        "SELECT model, count(*) AS n, sum(cost_micros)::bigint AS cost FROM usage_records "
        "GROUP BY 1 ORDER BY 1",
        "",
    ),
    "by_outcome": (
        "SELECT outcome, job_status, count(*) AS n FROM usage_records GROUP BY 1, 2 "
        "ORDER BY 3 DESC",
        "",
    ),
    "by_month": (
        "SELECT to_char(date_trunc('month', created_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS m, "
        "count(*) AS n FROM usage_records WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1",
        "tenant",
    ),
    "export_rows": (
        "SELECT count(*) AS n FROM usage_records WHERE tenant_id = $1 AND created_at >= $2 "
        "AND created_at < $3",
        "range",
    ),
    # what the month summary must say: the settled ledger by settlement day (UTC)
    # (summed exactly in nano-dollars, rounded once: docs/money.md)
    "month_cost": (
        "SELECT coalesce(round(sum(cost_nanos) / 1000.0), 0)::bigint AS n FROM usage_records WHERE "
        "tenant_id = $1 AND status = 'settled' AND (settled_at AT TIME ZONE 'UTC')::date >= $2 "
        "AND (settled_at AT TIME ZONE 'UTC')::date < $3",
        "month",
    ),
    "consistency": (
        "SELECT (SELECT count(*) FROM usage_records WHERE status = 'settled') AS ledger_n, "
        "(SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_records WHERE status = "
        "'settled') AS ledger_cost, (SELECT coalesce(sum(requests), 0) FROM usage_daily) AS "
        "rollup_n, (SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_daily) AS "
        "rollup_cost, (SELECT count(*) FROM usage_daily) AS rollup_rows, (SELECT count(*) FROM "
        "usage_daily WHERE tenant_id = $1 AND day >= $2 AND day < $3) AS month_rollup_rows",
        "month",
    ),
    "sizes": (
        "SELECT pg_size_pretty(pg_table_size('usage_records')) AS heap, "
        "pg_size_pretty(pg_indexes_size('usage_records')) AS idx, "
        "pg_size_pretty(pg_total_relation_size('usage_daily')) AS daily",
        "",
    ),
}


def describe_ledger(db: Database, main: Tenant, others: list[Tenant], month: tuple) -> dict:
    tid = uuid.UUID(main.id)
    params = {
        "": (),
        "tenant": (tid,),
        "range": (tid, midnight(month[0]), midnight(month[1])),
        "month": (tid, *month),
    }

    async def facts() -> dict[str, list[Any]]:
        conn = await connect(db)
        try:
            return {
                name: await conn.fetch(statement, *params[which])
                for name, (statement, which) in LEDGER_FACTS.items()
            }
        finally:
            await conn.close()

    info = asyncio.run(facts())
    names = {main.id: "measured", **{o.id: o.name for o in others}}
    tally = ", ".join(f"{names.get(r['t'], r['t'][:8])} {r['n']:,}" for r in info["per_tenant"])
    print(f"   rows per tenant: {tally}")
    by_month = ", ".join(f"{r['m']} {r['n']:,}" for r in info["by_month"])
    print(f"   measured tenant per month (by created_at): {by_month}")
    by_model = ", ".join(
        f"{r['model']} {r['n']:,} ({(r['cost'] or 0) / 1e6:,.2f} USD)" for r in info["by_model"]
    )
    print(f"   by model: {by_model}")
    outcomes = ", ".join(f"{r['outcome']}/{r['job_status']} {r['n']:,}" for r in info["by_outcome"])
    print(f"   by outcome: {outcomes}")
    c, s = info["consistency"][0], info["sizes"][0]
    same = c["ledger_n"] == c["rollup_n"] and c["ledger_cost"] == c["rollup_cost"]
    export_rows = info["export_rows"][0]["n"]
    print(
        f"   usage_daily: {c['rollup_rows']:,} rows ({c['month_rollup_rows']} for the measured "
        f"tenant's month); rollups {'EQUAL' if same else 'DIFFER FROM'} the ledger: "
        f"{c['rollup_n']:,} requests / {c['rollup_cost'] / 1e6:,.6f} USD vs "
        f"{c['ledger_n']:,} / {c['ledger_cost'] / 1e6:,.6f} USD\n"
        f"   usage_records: heap {s['heap']}, indexes {s['idx']}; usage_daily {s['daily']}; "
        f"measured month {month[0]} .. {month[1]}: {export_rows:,} ledger rows of the "
        "measured tenant"
    )
    return {"export_rows": export_rows, "month_cost": info["month_cost"][0]["n"]}


# --- 1. reading usage -------------------------------------------------------------------------


def timed_gets(client: Any, path: str, params: dict, headers: dict, n: int) -> tuple[list, Any]:
    """5 warm-up requests (connection, pool, statement caches), then `n` timed ones."""
    lat, last = [], None
    for i in range(5 + n):
        t0 = time.perf_counter()
        last = client.get(path, params=params, headers=headers)
        if i >= 5:
            lat.append(time.perf_counter() - t0)
        if last.status_code != 200:
            raise BenchError(f"GET {path} {params}: {last.status_code} {last.text[:500]}")
    return sorted(lat), last


def measure_reads(
    args: Any,
    run: Run,
    db: Database,
    api: Api,
    main: Tenant,
    month: tuple,
    quarter: tuple,
    ledger: dict,
) -> dict[str, Any]:
    import httpx

    from app.kit.money import micros_to_usd

    print(
        f"\n== 1. reading usage: month {month[0]} .. {month[1]} (to exclusive), "
        f"{args.summary_requests} sequential requests per line after 5 warm-up, one keep-alive "
        "httpx client, API unpinned"
    )
    table = report.Table(
        *(("request", "<44"), ("p50 ms", "7.1f"), ("p95 ms", "7.1f"), ("max ms", "7.1f")),
        *(("n", "4d"), ("answer", "<")),
    )
    expected = micros_to_usd(ledger["month_cost"])
    worst = 0.0
    with httpx.Client(base_url=api.base, timeout=60) as client:

        def line(label: str, path: str, rng: tuple, group_by: str, headers: dict) -> Any:
            params = {"from": rng[0].isoformat(), "to": rng[1].isoformat(), "group_by": group_by}
            lat, r = timed_gets(client, path, params, headers, args.summary_requests)
            note = f"{len(r.json()['data'])} groups, {len(r.content):,} B"
            if path == "/v1/usage":
                total = r.json()["total_cost_usd"]
                note += (
                    ", total = ledger" if total == expected else f", TOTAL {total} != {expected}"
                )
            p = (report.pct(lat, 50), report.pct(lat, 95), lat[-1])
            table.row(label, *(v * 1000 for v in p), len(lat), note)
            return p[1] * 1000

        for group_by in ("day", "month", "model"):
            worst = max(
                worst,
                line(f"GET /v1/usage group_by={group_by}", "/v1/usage", month, group_by, main.auth),
            )
        for label, rng in (("month", month), ("3 months", quarter)):
            for group_by in ("day", "month", "model"):
                line(
                    f"GET /v1/admin/usage {label} group_by={group_by}",
                    "/v1/admin/usage",
                    rng,
                    group_by,
                    ADMIN,
                )
        line("GET /v1/usage group_by=day (again)", "/v1/usage", month, "day", main.auth)
        verdict = "meets" if worst <= SUMMARY_TARGET_MS else "MISSES"
        print(f"   tenant month summary: worst p95 {worst:.1f} ms, {verdict} target <= 50 ms")

        sql = asyncio.run(captured_sql(db, main, month))
        print(
            "   in-process service.summary() on one session (no HTTP, no auth), per call: "
            f"group_by=day {sql['inproc_day_ms']:.1f} ms, group_by=model "
            f"{sql['inproc_model_ms']:.1f} ms"
        )
        for name in ("summary_day", "export"):
            print(f"   EXPLAIN ANALYZE of the {name.replace('_', ' group_by=')} statement:")
            plan = sql[name + "_plan"]
            nodes = [plan[0], *(ln for ln in plan[1:] if "->" in ln)][:6]
            for ln in nodes + [ln for ln in plan if ln.startswith(("Execution", "Planning"))]:
                print(f"      {ln}")
        exports(args, run, db, api, client, main, month, ledger["export_rows"])
    return {"summary_worst_p95_ms": worst}


async def captured_sql(db: Database, main: Tenant, month: tuple) -> dict:
    """The services' own statements (captured from the engine), run under EXPLAIN ANALYZE."""
    from sqlalchemy import event

    from app.db.engine import create_engine, create_sessionmaker
    from app.usage import service
    from app.usage.export import export_query, planner_settings

    engine = create_engine(db.url, pool_size=1)
    captured: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    span = {"start": month[0], "end": month[1], "tenant_id": uuid.UUID(main.id)}
    out: dict[str, Any] = {}
    try:
        sm = create_sessionmaker(engine)
        for group_by in ("day", "model"):
            async with sm() as session:
                await service.summary(session, group_by=group_by, **span)
                t0 = time.perf_counter()
                for _ in range(20):
                    await service.summary(session, group_by=group_by, **span)
                out[f"inproc_{group_by}_ms"] = (time.perf_counter() - t0) / 20 * 1000
            out[f"summary_{group_by}"] = captured[-1]
        # The export's SELECT, as its COPY runs it (app.usage.export).
        statement, params = export_query(**span)
        out["export"] = (statement, tuple(params))
        settings = {"export": planner_settings(span["tenant_id"])}
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
        for name in ("summary_day", "summary_model", "export"):
            statement, params = out[name]
            async with engine.connect() as conn:
                for setting in settings.get(name, ()):
                    await conn.exec_driver_sql(setting)
                result = await conn.exec_driver_sql(
                    f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params
                )
                out[name + "_plan"] = [r[0] for r in result]
    finally:
        await engine.dispose()
    return out


def exports(
    args: Any,
    run: Run,
    db: Database,
    api: Api,
    client: Any,
    main: Tenant,
    month: tuple,
    expected_rows: int,
) -> None:
    """The month's CSV export, `--exports` times (and once more under py-spy with --profile)."""
    params = {"from": month[0].isoformat(), "to": month[1].isoformat()}
    print(
        f"   GET /v1/usage/export.csv for the month ({expected_rows:,} rows expected), streamed "
        "and counted by the client (lines only, not parsed); API RSS sampled every 20 ms:"
    )
    table = report.Table(
        *(("export", "<16"), ("status", "d"), ("total s", ".2f"), ("1st byte ms", ".0f")),
        *(("rows/s", ",.0f"), ("MB", ".1f"), ("MB/s", ".1f"), ("reads", ",d")),
        *(("RSS MB before/peak/after/HWM", "<28"), ("CPU (share of a core)", "<"), ("rows", "<")),
    )
    runs = args.exports + (1 if args.profile else 0)
    export_s = 60.0
    for i in range(runs):
        profiled = args.profile and i == runs - 1
        meter = CpuMeter({"API": lambda: cpu_of(api.pid), "postgres": partial(postgres_cpu, db)})
        n_bytes = lines = chunks = 0
        ttfb = None
        stream = client.stream(
            "GET", "/v1/usage/export.csv", params=params, headers=main.auth, timeout=600
        )
        with (
            profiling(profiled, run.out_dir, api.pid, "api-export", export_s + 5, args.profile_top),
            RssSampler(api.pid, 0.02) as rss,
        ):
            meter.start()
            t0 = time.perf_counter()
            with stream as r:
                for chunk in r.iter_raw():
                    ttfb = ttfb or time.perf_counter() - t0
                    chunks += 1
                    n_bytes += len(chunk)
                    lines += chunk.count(b"\n")
            meter.stop()
        export_s = meter.wall
        rows = lines - 1  # the header
        mb = [rss.before.get("VmRSS", 0), rss.peak(), rss.after.get("VmRSS", 0)]
        mb.append(rss.after.get("VmHWM", 0))
        table.row(
            f"#{i + 1}" + (" (py-spy)" if profiled else ""),
            r.status_code,
            export_s,
            (ttfb or export_s) * 1000,
            rows / export_s,
            n_bytes / 1e6,
            n_bytes / 1e6 / export_s,
            chunks,
            " / ".join(f"{v / 1024:.0f}" for v in mb),
            meter.shares(),
            "= ledger" if rows == expected_rows else f"{rows:,} != {expected_rows:,}",
        )
        pg_after = backends(db, "")
        time.sleep(5)  # a correct export returned its connection when the response ended
        left = backends(db, "AND state <> 'idle' AND query LIKE '%FROM usage_records%'")
        gc_warnings = api.log.read_text(errors="replace").count(GC_WARNING)
        table.note(
            f"the API's connections right after it: {pg_after}; 5 s later, still in a transaction "
            f"after reading usage_records: {left}; SQLAlchemy 'garbage collector ... "
            f"non-checked-in connection' warnings in the API log so far: {gc_warnings}"
        )


def backends(db: Database, where: str) -> str:
    """The API's Postgres connections by state; for a busy state, how long the oldest has been
    in it and in its transaction."""
    rows = run_sql(
        db,
        "SELECT state, count(*) AS n, extract(epoch FROM max(now() - state_change)) AS s, "
        "extract(epoch FROM max(now() - xact_start)) AS x "
        f"FROM pg_stat_activity WHERE {MINE} {where} GROUP BY state ORDER BY state",
    )
    parts = []
    for r in rows:
        busy = r["state"] != "idle"
        part = f"{r['n']} {r['state']}"
        parts.append(
            part + (f" (for {r['s']:.1f} s, transaction {r['x'] or 0:.0f} s)" if busy else "")
        )
    return ", ".join(parts) or "none"


# --- 2. create path -----------------------------------------------------------------------------


def create_tenants(api: Api, breakdown: bool) -> dict[str, list[Tenant]]:
    configs = {
        "OFF, 1 tenant": [api.new_tenant("create-off")],
        "ON, 1 tenant": [api.new_tenant("create-on", **HUGE_BUDGET, **HUGE_RATE)],
    }
    if breakdown:
        configs["budget only, 1 tenant"] = [api.new_tenant("create-budget", **HUGE_BUDGET)]
        configs["rate limit only, 1 tenant"] = [api.new_tenant("create-rate", **HUGE_RATE)]
    configs["OFF, 8 tenants"] = [api.new_tenant(f"create-off-{i}") for i in range(8)]
    configs["ON, 8 tenants"] = [
        api.new_tenant(f"create-on-{i}", **HUGE_BUDGET, **HUGE_RATE) for i in range(8)
    ]
    return configs


def statement_label(query: str) -> str:
    q = " ".join(query.split())
    for needle, label in (
        ("SELECT budget_periods", "budget_periods SELECT ... FOR UPDATE"),
        ("UPDATE budget_periods", "budget_periods UPDATE"),
        ("UPDATE api_keys", "api_keys last_used_at UPDATE"),
        ("rate_limit_windows", "rate_limit_windows upsert"),
        ("INSERT INTO jobs", "jobs INSERT"),
        ("COMMIT", "COMMIT"),
    ):
        if needle in q:
            return label
    return q[:40]


def drain(db: Database, within_s: float) -> float:
    """Wait until none of the API's connections is busy (left-over requests of a stalled run
    finish or time out server-side); the seconds it took."""
    t0, quiet = time.perf_counter(), 0
    while time.perf_counter() - t0 < within_s and quiet < 5:
        # the export's connection, left in a transaction until a GC pass: not of this run
        busy = run_sql(
            db,
            f"SELECT count(*) AS n FROM pg_stat_activity WHERE {MINE} AND state "
            "<> 'idle' AND query NOT LIKE '%FROM usage_records%'",
        )[0]["n"]
        quiet = quiet + 1 if busy == 0 else 0
        time.sleep(0.2)
    return time.perf_counter() - t0


def create_load(args: Any, api: Api, tenants: list[Tenant], conc: int) -> LoadSpec:
    return LoadSpec(
        port=api.port,
        body=KLING_BODY,
        headers_list=[t.auth for t in tenants],
        concurrency=conc,
        warmup_s=args.warmup,
        duration_s=args.duration,
        max_requests=args.max_requests,
        request_timeout_s=args.request_timeout,
    )


def measure_creates(args: Any, db: Database, api: Api, configs: dict[str, list[Tenant]]) -> None:
    print(
        f"\n== 2. create path: POST /v1/jobs (Kling), closed loop, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s (<= {args.max_requests} requests) per run, {args.rounds} round(s) "
        f"in alternating order, API on core {args.server_core}, load generator on core "
        f"{args.client_core}, Postgres unpinned; worker not running; a request unanswered after "
        f"{args.request_timeout:g} s counts as an error (status 0)\n"
        "   API/pg CPU: CPU ms per answered request (warm-up included); lockq: backends of the API "
        "waiting on a lock in Postgres, mean / max (pg_stat_activity every 0.1 s); conns: the "
        "API's open Postgres connections, max; stall s: longest time every API connection was "
        "idle in a transaction or waiting on a lock (none working); pool t/o: 'QueuePool "
        "limit ... timed out' errors in the API log during the run"
    )
    table = report.Table(
        *(("round", "d"), ("conc", "d"), ("configuration", "<25"), ("req/s", ".0f"), ("ok", "6d")),
        *(("err", "d"), ("p50 ms", ".1f"), ("p99 ms", ".1f"), ("max ms", ".0f")),
        *(("API CPU", ".2f"), ("pg CPU", ".2f"), ("lockq", ">9"), ("conns", "d")),
        *(("stall s", ".1f"), ("pool t/o", "d")),
    )
    runs: dict[tuple[str, int], list[tuple[float, int]]] = {}  # (req/s, errors) per run
    errors: dict[tuple[str, int], str] = {}  # the first error of a configuration
    wedged: set[tuple[str, int]] = set()  # no answer within the timeout: not repeated
    names = list(configs)
    for rnd in range(1, args.rounds + 1):
        for conc in args.concurrency:
            for name in names if rnd % 2 else reversed(names):
                if (name, conc) in wedged:
                    table.note(f"{name} at {conc}: not repeated, it wedged the API")
                    continue
                pool_timeouts = api.log.read_text(errors="replace").count(POOL_TIMEOUT)
                meter = CpuMeter({"API": lambda: cpu_of(api.pid), "pg": partial(postgres_cpu, db)})
                with PgActivity(db, statement_label) as activity:
                    meter.start()
                    result = run_load(create_load(args, api, configs[name], conc), args.client_core)
                    meter.stop()
                pool_timeouts = (
                    api.log.read_text(errors="replace").count(POOL_TIMEOUT) - pool_timeouts
                )
                runs.setdefault((name, conc), []).append((result["rps"], result["errors"]))
                n = max(1, result["answered"])
                lock_mean, lock_max, conns, stall = activity.summary()
                table.row(
                    *(rnd, conc, name, result["rps"], result["ok"], result["errors"]),
                    *(result["lat_p50_ms"], result["lat_p99_ms"], result["max_s"] * 1000),
                    meter.used["API"] / n * 1000,
                    meter.used["pg"] / n * 1000 if db.embedded else "n/a",
                    f"{lock_mean:.1f}/{lock_max}",
                    conns,
                    stall,
                    pool_timeouts,
                )
                if lock_mean >= 0.5:
                    table.note(f"lock waits (mean per sample): {activity.lock_breakdown()}")
                if activity.snapshot:
                    stalled = "; ".join(
                        f"{r['n']} {r['state']}: {r['q']}" for r in activity.snapshot
                    )
                    table.note(f"stalled: {stalled}")
                if result["first_error"]:
                    table.note(f"statuses {result['statuses']}; first: {result['first_error']}")
                    errors.setdefault((name, conc), result["first_error"])
                if result["statuses"].get("0") or stall >= 5:
                    # Left-over requests keep the pool wedged for minutes: start a new process.
                    wedged.add((name, conc))
                    api.restart(args.server_core)
                    table.note(
                        f"(the API stayed wedged: restarted, pid {api.pid}, log "
                        f"{api.log.name}; this configuration is not repeated)"
                    )
                elif (drained := drain(db, 30)) > 2:
                    table.note(f"(the API needed {drained:.0f} s to drain)")
                api.running.check()
    create_medians(args, names, runs, errors, wedged)


def create_medians(args: Any, names: list[str], runs: dict, errors: dict, wedged: set) -> None:
    """The median of the runs without errors, when there is one (a sporadic 500 is reported,
    not averaged in); a wedged configuration's only run counts as what it is: ~0 req/s."""
    medians = {
        key: statistics.median([rps for rps, n_err in v if not n_err] or [rps for rps, _ in v])
        for key, v in runs.items()
    }

    def ratio(a: str, b: str, conc: int) -> str:
        den = medians[(b, conc)]
        value = f"{medians[(a, conc)] / den:.2f}" if den else "n/a"
        return value + (" (wedged)" if (a, conc) in wedged else "")

    for conc in args.concurrency:
        table = report.Table(
            ("configuration", "<26"),
            ("median req/s", ">12"),
            ("ratio to OFF", ">16"),
            ("", "<"),
            title=f"median req/s at {conc} connections (same server, same run; ON over 8 tenants "
            "to OFF over 8, the others to OFF with 1 tenant):",
        )
        for name in names:
            key = (name, conc)
            if key in wedged:
                mark = "WEDGED: no answer"
            elif all(n_err for _, n_err in runs[key]):
                mark = "ERRORS in every run"
            else:
                mark = "a run with errors left out" if key in errors else ""
            off = "OFF, 8 tenants" if name == "ON, 8 tenants" else "OFF, 1 tenant"
            shown = None if name.startswith("OFF") else ratio(name, off, conc)
            table.row(name, f"{medians[key]:.0f}", shown, mark)
        on8 = ratio("ON, 8 tenants", "OFF, 1 tenant", conc)
        table.note(f"ON over 8 tenants / OFF with 1 tenant = {on8}")
    for (name, conc), error in errors.items():
        print(f"   !! errors in {name} at {conc}: {error[:120]}")


def profile_summary(args: Any, run: Run, api: Api, main: Tenant, month: tuple) -> None:
    """The summary missed its target: sample the API while it answers summaries for a while."""
    import httpx

    params = {"from": month[0].isoformat(), "to": month[1].isoformat(), "group_by": "day"}
    with (
        httpx.Client(base_url=api.base, timeout=60) as client,
        profiling(True, run.out_dir, api.pid, "api-summary", 8, args.profile_top),
    ):
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            client.get("/v1/usage", params=params, headers=main.auth)


def profile_creates(args: Any, run: Run, api: Api, configs: dict[str, list[Tenant]]) -> None:
    conc, seconds = min(args.concurrency), max(5.0, args.duration)
    for label, name in (("on", "ON, 1 tenant"), ("off", "OFF, 1 tenant")):
        spec = create_load(args, api, configs[name], conc)
        spec.warmup_s, spec.duration_s = 0.5, seconds + 1
        with profiling(
            True, run.out_dir, api.pid, f"api-create-{label}-c{conc}", seconds, args.profile_top
        ):
            run_load(spec, args.client_core)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("usage_bench", __doc__, profile=True)
    g = p.add_argument_group("setup")
    g.add_argument("--rows", type=int, default=1_000_000, help="measured tenant's rows [1e6]")
    g.add_argument("--other-tenants", type=int, default=4, help="other tenants [4]")
    g.add_argument("--other-rows", type=int, default=100_000, help="rows of each other [1e5]")
    g.add_argument("--load-jobs", type=int, default=2, help="parallel INSERT connections [2]")
    g = p.add_argument_group("1. reading usage")
    g.add_argument("--summary-requests", type=int, default=50, help="per line [50]")
    g.add_argument("--exports", type=int, default=1, help="CSV exports timed (+1 under py-spy) [1]")
    g = p.add_argument_group("2. create path")
    g.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[16, 64],
        help="comma-separated connections in flight [16,64]",
    )
    add_load_flags(g, warmup=1.5, duration=4.0, per="run")
    g.add_argument(
        "--request-timeout",
        type=float,
        default=15.0,
        help="seconds a create may take before it counts as an error [15]; a run with such "
        "errors is not repeated and the API is restarted after it",
    )
    g.add_argument(
        "--no-breakdown", action="store_true", help="no budget-only and rate-limit-only runs"
    )
    g = p.add_argument_group("what to run")
    g.add_argument("--skip-reads", action="store_true")
    g.add_argument("--skip-creates", action="store_true")
    g.add_argument(
        "--api-app",
        default=GATEWAY_APP,
        help=f"uvicorn factory of the API [{GATEWAY_APP}]: a variant (e.g. a suggested fix kept "
        "outside app/) under the same load",
    )
    g.add_argument("--api-app-dir", type=Path, default=None, help="directory of --api-app's module")
    return parse(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Run("usage_bench", args, versions=VERSIONS) as run:
        if args.api_app != GATEWAY_APP:
            print(f"API app   {args.api_app} (a VARIANT, not the gateway as shipped)")
        db = run.database("foley_usage_bench", PG_ROOT)
        print(settings_note(db))
        env = gateway_env(db, run.tmp / "gateway")
        api = Api(run.procs, env, run.out_dir, app=args.api_app, app_dir=args.api_app_dir).start()
        this_month = datetime.now(UTC).date().replace(day=1)
        quarter = (month_add(this_month, -3), this_month)
        month = (month_add(this_month, -2), month_add(this_month, -1))
        main_tenant = api.new_tenant("usage-bench")
        others = [api.new_tenant(f"usage-other-{i}") for i in range(args.other_tenants)]
        configs = create_tenants(api, not args.no_breakdown)
        if not args.skip_reads:
            load_ledger(args, db, main_tenant, others, quarter)
            ledger = describe_ledger(db, main_tenant, others, month)
            reads = measure_reads(args, run, db, api, main_tenant, month, quarter, ledger)
            if reads["summary_worst_p95_ms"] > SUMMARY_TARGET_MS:
                profile_summary(args, run, api, main_tenant, month)
        if not args.skip_creates:
            # A fresh process, pinned from its start: nothing left over from measurement 1 (the
            # export leaves a connection in a transaction until a GC pass, see the README).
            api.restart(args.server_core)
            print(f"\n(measurement 2 runs on a new API process, pid {api.pid})")
            measure_creates(args, db, api, configs)
            if args.profile:
                profile_creates(args, run, api, configs)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
