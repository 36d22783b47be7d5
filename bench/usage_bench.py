"""Usage benchmark: reading usage over a 1M-row ledger, and what budgets + rate limits cost on
`POST /v1/jobs`.

Prints figures, asserts nothing, stops by itself (bounded request counts, durations and
per-request timeouts), talks to 127.0.0.1 only, and stops every process it started. Run from the
repository root:

    .venv/bin/python bench/usage_bench.py             # both measurements, ~6 minutes
    .venv/bin/python bench/usage_bench.py --profile   # + py-spy of the export and the create path
    .venv/bin/python bench/usage_bench.py --help      # sizes, durations, concurrency, variants

Setup. A fresh database (the embedded server of `app.db.embedded`, its own data directory
/tmp/foley-usage-bench-pg-<uid> kept between runs, so that loading a million rows never disturbs
gateway_bench's server; or FOLEY_BENCH_DATABASE_URL's server, whose role needs CREATEDB), made
and migrated by `tests.support.database.create_database`, dropped at the end. ONE uvicorn process
serves `app.main:create_app` (uvloop, httptools, no access log; the worker is NOT running) with
only FOLEY_DATABASE_URL, FOLEY_ADMIN_TOKEN, FOLEY_DATA_DIR and FOLEY_ENV=development set. Tenants
and keys are made through the admin API, budgets and limits with PATCH /v1/admin/tenants/{id}.

The ledger is generated in SQL, `INSERT ... SELECT ... FROM generate_series` (seeded `random()`)
on `--load-jobs` connections, with usage_records' indexes, constraints and foreign keys dropped
for the load and re-created from their own definitions (checked identical afterwards): `--rows`
settled records for the measured tenant plus `--other-rows` for each of `--other-tenants`
others, interleaved in insertion order (as a shared ledger is), created evenly over the three
calendar months before the current one, settled 20-300 s later. Models: Kling 50 % (1 video,
0.035 USD), ThinkSound 35 % and ThinkSound audio 15 % (2-40 compute seconds at 0.001 USD/s).
Outcomes: 92 % succeeded, 4 % upstream 5xx and 2 % 422 (failed, 0 USD; the 422s flagged), 1 %
canceled while queued (0 USD) and 1 % while running (its compute seconds). The records carry no
job (job_id NULL: a million jobs rows would only slow the load). The daily rollups are built by
`app.usage.ledger.rebuild_rollups` itself (the repair path, one GROUP BY over the ledger),
checked equal to the ledger, then `VACUUM ANALYZE`.

1. Reading usage, the API unpinned. For the middle month of the three (from = its 1st, to = the
   next 1st): `GET /v1/usage?group_by=day|month|model` (served from the rollups),
   `--summary-requests` sequential requests each on one keep-alive connection after 5 warm-up
   requests, p50/p95/max (target: <= 50 ms); the same for `GET /v1/admin/usage` across tenants
   for the month and for the three months. The summary's and the export's SQL are captured from
   the services themselves and run under EXPLAIN ANALYZE, to split database time from the rest.
   Then `GET /v1/usage/export.csv` for the month (`--exports` times, plus once under py-spy with
   --profile): total time, time to first byte, rows/s, MB/s, the API process's resident memory
   (VmRSS from /proc every 20 ms: before, peak during, after), its and Postgres's CPU, the row
   count checked against the ledger, and whether the export's connection is still in a
   transaction 5 s after the response ended.

2. Create-path cost of budgets + limits. `POST /v1/jobs` with a Kling body, closed loop (the raw
   asyncio HTTP/1.1 keep-alive client of bench/gateway_bench.py, driven here so that connections
   can be spread over several tenants' keys: connection i uses key i mod k), the API pinned to
   core 0 and the load generator to core 1 (taskset), Postgres unpinned. Configurations: OFF (a
   tenant with no budget and no rate limit), ON (a budget of 1e9 USD, so nothing is refused, and
   rate_limit_per_minute = 1e9, never hit), budget only, rate limit only, then OFF and ON with the
   load spread over 8 tenants (the budget-period row lock serializes one tenant's creates; 8
   tenants have 8 locks). Each at every `--concurrency` (16 and 64; the API's pool holds 20
   connections), `--rounds` rounds in alternating order; the median req/s and the ratios. During
   each run pg_stat_activity is sampled every 0.1 s: backends waiting on a lock (and on which
   statement), and stalls (every API connection idle in a transaction or waiting on a lock).
   A request unanswered after `--request-timeout` s is an error; such a run is not repeated and
   the API is restarted after it (same settings and port), since left-over requests keep a
   wedged pool busy for minutes.

`--api-app module:factory --api-app-dir DIR` runs the same measurements against a variant of the
app (e.g. a suggested fix kept outside app/); the output then says so on its second line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import gateway_bench as gb  # bench/ is on sys.path: this file runs as a script from it

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
HOST = "127.0.0.1"
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex[:12]
SUMMARY_TARGET_MS = 50.0

KLING = "fal-ai/kling-video/video-to-audio"
THINKSOUND = "fal-ai/thinksound"
THINKSOUND_AUDIO = "fal-ai/thinksound/audio"
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


def _month_add(d: date, months: int) -> date:
    m = d.month - 1 + months
    return date(d.year + m // 12, m % 12 + 1, 1)


# =================================================================================================
# The load generator (a separate process, `usage_bench.py _loadgen SPEC`): gateway_bench's raw
# keep-alive HTTP/1.1 connections, each connection with its own tenant's key.
# =================================================================================================


async def _closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec["concurrency"]
    body = json.dumps(spec["body"]).encode()
    requests = [
        gb._encode_request(spec["host"], spec["port"], spec["path"], headers, body)
        for headers in spec["headers_list"]
    ]
    conns = [await gb.RawConnection.open(spec["host"], spec["port"]) for _ in range(n)]
    t_start = time.perf_counter()
    warm_end = t_start + spec["warmup_s"]
    end = warm_end + spec["duration_s"]
    budget = spec["max_requests"]
    state: dict[str, Any] = {
        "answered": 0,
        "sent": 0,
        "ok": 0,
        "errors": 0,
        "first_error": None,
        "max_s": 0.0,
    }
    statuses: dict[str, int] = {}
    lat: list[float] = []

    async def run(i: int, conn: gb.RawConnection) -> None:
        request = requests[i % len(requests)]
        while True:
            now = time.perf_counter()
            measuring = now >= warm_end
            if now >= end or (measuring and state["sent"] >= budget):
                conn.close()
                return
            t0 = time.perf_counter()
            try:
                status, answer = await asyncio.wait_for(
                    conn.send(request), spec["request_timeout_s"]
                )
            except TimeoutError:  # bounded: a stuck server does not hang the run
                status, answer = 0, f"no answer in {spec['request_timeout_s']:g} s".encode()
            t1 = time.perf_counter()
            state["max_s"] = max(state["max_s"], t1 - t0)
            state["answered"] += 1
            if status != 202 or t0 >= warm_end:  # an error counts even if sent in the warm-up
                state["sent"] += 1
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 202:
                if t0 >= warm_end:
                    state["ok"] += 1
                    lat.append(t1 - t0)
            else:
                state["errors"] += 1
                if state["first_error"] is None:
                    state["first_error"] = f"{status} {answer[:300]!r}"
                if status == 0:  # this connection is unusable now: stop it (no pile-up)
                    conn.close()
                    return

    tasks = [asyncio.create_task(run(i, c)) for i, c in enumerate(conns)]
    await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
    cpu0, t_measure = gb._cpu_seconds(), time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_measure
    cpu = gb._cpu_seconds() - cpu0
    lat.sort()
    return {
        **state,
        "statuses": statuses,
        "elapsed_s": elapsed,
        "rps": state["ok"] / elapsed if elapsed > 0 else 0.0,
        "client_cpu": cpu / elapsed if elapsed > 0 else 0.0,
        "lat_p50_ms": gb._pct(lat, 50) * 1000 if lat else None,
        "lat_p99_ms": gb._pct(lat, 99) * 1000 if lat else None,
    }


def loadgen_main(spec_json: str) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_closed_loop(json.loads(spec_json)))
    sys.stdout.write(json.dumps(result) + "\n")


def _run_loadgen(spec: dict[str, Any], core: int | None, timeout: float) -> dict[str, Any]:
    cmd = [*gb._taskset(core), PY, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise gb.BenchError(f"the load generator did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise gb.BenchError(
            f"load generator failed ({done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# =================================================================================================
# Postgres
# =================================================================================================

PG_ROOT = Path(tempfile.gettempdir()) / f"foley-usage-bench-pg-{os.getuid()}"


def _create_database() -> gb.Database:
    # A server of its own (not gateway_bench's): loading a million rows on a server that another
    # benchmark is measuring would skew its figures, and its Postgres CPU counts.
    return gb.create_database("foley_usage_bench", PG_ROOT)


def _postgres_cpu(db: gb.Database) -> float:
    """CPU seconds of this run's embedded server: the postmaster's own and its reaped children's
    (cutime/cstime: backends that exited, e.g. the API pool's overflow connections) plus every
    live child's. 0 for an external server."""
    if not db.embedded:
        return 0.0
    try:
        master = int((PG_ROOT / "postgres" / "postmaster.pid").read_text().split()[0])
        fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = sum(int(f) for f in fields[11:15]) / gb._TICK
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(child[1]) == master:
                    total += (int(child[11]) + int(child[12])) / gb._TICK
    return total


class CpuMeter:
    """CPU seconds used between start() and stop(), per name (a callable giving a total)."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> CpuMeter:
        self.before = {n: f() for n, f in self.named.items()}
        self.wall = time.perf_counter()
        return self

    def stop(self) -> CpuMeter:
        self.wall = time.perf_counter() - self.wall
        self.used = {n: max(0.0, f() - self.before[n]) for n, f in self.named.items()}
        return self

    def share(self) -> str:
        return ", ".join(f"{n} {u / self.wall * 100:.0f}%" for n, u in self.used.items())


class Api:
    """The gateway's API: one uvicorn process; restarted (a new process, same settings and
    port) only when a run has wedged it."""

    def __init__(
        self,
        procs: gb.Procs,
        env: dict[str, str],
        port: int,
        out_dir: Path,
        app: str = "app.main:create_app",
        app_dir: Path | None = None,
    ) -> None:
        self.procs, self.env, self.port, self.out_dir = procs, env, port, out_dir
        self.app, self.app_dir = app, app_dir
        self.starts = 0
        self.proc: gb.Proc | None = None

    def start(self, core: int | None = None) -> None:
        self.starts += 1
        log = self.out_dir / ("api.log" if self.starts == 1 else f"api-{self.starts}.log")
        extra = ["--app-dir", str(self.app_dir)] if self.app_dir else []
        cmd = [*gb._taskset(core), *gb._uvicorn_cmd(self.app, self.port, *extra)]
        self.proc = self.procs.spawn("API", cmd, self.env, log)
        gb._wait_http(self.proc, f"http://{HOST}:{self.port}/healthz")

    def restart(self, core: int | None = None) -> None:
        assert self.proc is not None
        self.procs.stop(self.proc)
        self.start(core)

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None
        return self.proc.popen

    @property
    def log(self) -> Path:
        assert self.proc is not None
        return self.proc.log

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def tail(self) -> str:
        return self.proc.tail() if self.proc is not None else ""


def _meter(db: gb.Database, api: Api) -> CpuMeter:
    named = {"API": lambda: gb._cpu_of(api.popen.pid)}
    if db.embedded:
        named["postgres"] = lambda: _postgres_cpu(db)
    return CpuMeter(named)


async def _connect(db: gb.Database) -> Any:
    import asyncpg

    return await asyncpg.connect(**db.asyncpg_kwargs())


# =================================================================================================
# Setup: tenants (admin API), the ledger (SQL), the rollups (rebuild_rollups)
# =================================================================================================


@dataclass
class Tenant:
    name: str
    id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _new_tenant(client: Any, name: str, **patch: Any) -> Tenant:
    r = client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN)
    if r.status_code != 201:
        raise gb.BenchError(f"creating tenant {name}: {r.status_code} {r.text}")
    tid = r.json()["id"]
    if patch:
        r = client.patch(f"/v1/admin/tenants/{tid}", json=patch, headers=ADMIN)
        if r.status_code != 200:
            raise gb.BenchError(f"PATCH tenant {name}: {r.status_code} {r.text}")
    r = client.post(f"/v1/admin/tenants/{tid}/keys", json={"name": "bench"}, headers=ADMIN)
    if r.status_code != 201:
        raise gb.BenchError(f"creating a key for {name}: {r.status_code} {r.text}")
    return Tenant(name, tid, r.json()["key"])


# Rows g in [lo, hi] of 1..n_total (one range per loading connection). Row g belongs to the
# measured tenant when g % k < main_share and to other tenant (g % k - main_share) otherwise, so
# tenants interleave as in a shared ledger and the counts are exact. created_at rises with g (one
# slot of span/n_total each, jittered inside it).
LEDGER_SQL = f"""
INSERT INTO usage_records (
    id, upstream_request_id, tenant_id, job_id, model, endpoint, unit, units, unit_price_micros,
    price_id, estimated_cost_micros, cost_micros, status, outcome, flagged, orphan, job_status,
    created_at, settled_at)
SELECT gen_random_uuid(), gen_random_uuid()::text, tenant_id, NULL, model, model, unit, units,
       price, price_id, est, round(units * price)::bigint, 'settled', outcome,
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


def _load_ledger(
    db: gb.Database,
    main: Tenant,
    others: list[Tenant],
    rows: int,
    other_rows: int,
    start: date,
    end: date,
    load_jobs: int,
) -> None:
    """The ledger by INSERT ... SELECT, the rollups by rebuild_rollups, VACUUM ANALYZE."""
    # A cycle of k slots: main_share for the measured tenant, one per other tenant.
    if others:
        if rows % other_rows:
            raise gb.BenchError("--rows must be a multiple of --other-rows")
        main_share = rows // other_rows
    else:
        main_share = 1
    k = main_share + len(others)
    total = rows + other_rows * len(others)
    span_s = (
        datetime.combine(end, datetime.min.time(), tzinfo=UTC)
        - datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    ).total_seconds()

    async def insert_range(i: int, lo: int, hi: int) -> None:
        conn = await _connect(db)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(f"SELECT setseed({0.42 + i / 100})")
            await conn.execute(
                LEDGER_SQL,
                k,
                main_share,
                uuid.UUID(main.id),
                [uuid.UUID(o.id) for o in others] or [uuid.UUID(main.id)],
                datetime.combine(start, datetime.min.time(), tzinfo=UTC),
                span_s / total,
                lo,
                hi,
            )
        finally:
            await conn.close()

    async def load() -> dict[str, float]:
        times: dict[str, float] = {}
        conn = await _connect(db)
        try:
            await conn.execute("SET maintenance_work_mem = '256MB'")
            # Bulk-load pattern: drop the table's indexes, constraints and foreign keys, insert,
            # re-create them from their own definitions (checked identical afterwards).
            before = await _ledger_schema(conn)
            t0 = time.perf_counter()
            for name, kind, _ in before:
                if kind in ("f", "p", "u"):
                    await conn.execute(f'ALTER TABLE usage_records DROP CONSTRAINT "{name}"')
            for name, kind, _ in before:
                if kind == "i":
                    await conn.execute(f'DROP INDEX "{name}"')
            bounds = [1 + total * j // load_jobs for j in range(load_jobs + 1)]
            await asyncio.gather(
                *(insert_range(j, bounds[j], bounds[j + 1] - 1) for j in range(load_jobs))
            )
            times["insert"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for order in ("p", "u", "i", "f"):
                for name, kind, definition in before:
                    if kind != order:
                        continue
                    if kind == "i":
                        await conn.execute(definition)
                    else:
                        await conn.execute(
                            f'ALTER TABLE usage_records ADD CONSTRAINT "{name}" {definition}'
                        )
            times["indexes"] = time.perf_counter() - t0
            if await _ledger_schema(conn) != before:
                raise gb.BenchError("usage_records' indexes/constraints differ after the load")
        finally:
            await conn.close()
        t0 = time.perf_counter()
        await _rebuild_rollups(db, start, _month_add(end, 1))
        times["rollups"] = time.perf_counter() - t0
        conn = await _connect(db)
        try:
            t0 = time.perf_counter()
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
    times = asyncio.run(load())
    print(
        f"   INSERT ... SELECT generate_series on {load_jobs} connection(s), indexes and "
        f"constraints dropped: {times['insert']:.1f} s ({total / times['insert']:,.0f} rows/s); "
        f"re-created (identical): {times['indexes']:.1f} s; rebuild_rollups: "
        f"{times['rollups']:.1f} s; VACUUM ANALYZE: {times['vacuum']:.1f} s"
    )


async def _ledger_schema(conn: Any) -> list[tuple[str, str, str]]:
    """usage_records' constraints (p/u/f) and plain indexes (i): (name, kind, definition)."""
    rows = await conn.fetch(
        "SELECT conname AS name, contype::text AS kind, pg_get_constraintdef(oid) AS def "
        "FROM pg_constraint WHERE conrelid = 'usage_records'::regclass AND contype IN "
        "('p', 'u', 'f') UNION ALL SELECT c.relname, 'i', pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = "
        "'usage_records'::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE "
        "k.conindid = i.indexrelid) ORDER BY 1"
    )
    return [(r["name"], r["kind"], r["def"]) for r in rows]


async def _rebuild_rollups(db: gb.Database, start: date, end: date) -> None:
    from app.db.engine import create_engine, create_sessionmaker
    from app.usage.ledger import rebuild_rollups

    engine = create_engine(db.url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await rebuild_rollups(session, start, end)
    finally:
        await engine.dispose()


async def _describe_ledger(db: gb.Database, main: Tenant, month: tuple[date, date]) -> dict:
    conn = await _connect(db)
    try:
        info: dict[str, Any] = {}
        info["per_tenant"] = await conn.fetch(
            "SELECT tenant_id::text AS t, count(*) AS n FROM usage_records "
            "GROUP BY 1 ORDER BY 2 DESC"
        )
        info["by_model"] = await conn.fetch(
            "SELECT model, count(*) AS n, sum(cost_micros)::bigint AS cost FROM usage_records "
            "GROUP BY 1 ORDER BY 1"
        )
        info["by_outcome"] = await conn.fetch(
            "SELECT outcome, job_status, count(*) AS n FROM usage_records "
            "GROUP BY 1, 2 ORDER BY 3 DESC"
        )
        info["by_month"] = await conn.fetch(
            "SELECT to_char(date_trunc('month', created_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS m, "
            "count(*) AS n FROM usage_records WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1",
            uuid.UUID(main.id),
        )
        lo = datetime.combine(month[0], datetime.min.time(), tzinfo=UTC)
        hi = datetime.combine(month[1], datetime.min.time(), tzinfo=UTC)
        info["export_rows"] = await conn.fetchval(
            "SELECT count(*) FROM usage_records WHERE tenant_id = $1 AND created_at >= $2 "
            "AND created_at < $3",
            uuid.UUID(main.id),
            lo,
            hi,
        )
        # what the month summary must say: the settled ledger by settlement day (UTC)
        info["month_cost"] = await conn.fetchval(
            "SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_records WHERE tenant_id = $1 "
            "AND status = 'settled' AND (settled_at AT TIME ZONE 'UTC')::date >= $2 "
            "AND (settled_at AT TIME ZONE 'UTC')::date < $3",
            uuid.UUID(main.id),
            month[0],
            month[1],
        )
        info["consistency"] = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM usage_records WHERE status = 'settled') AS ledger_n, "
            "(SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_records "
            "WHERE status = 'settled') "
            "AS ledger_cost, (SELECT coalesce(sum(requests), 0) FROM usage_daily) AS rollup_n, "
            "(SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_daily) AS rollup_cost, "
            "(SELECT count(*) FROM usage_daily) AS rollup_rows, "
            "(SELECT count(*) FROM usage_daily WHERE tenant_id = $1 AND day >= $2 AND day < $3) "
            "AS month_rollup_rows",
            uuid.UUID(main.id),
            month[0],
            month[1],
        )
        info["sizes"] = await conn.fetchrow(
            "SELECT pg_size_pretty(pg_table_size('usage_records')) AS heap, "
            "pg_size_pretty(pg_indexes_size('usage_records')) AS idx, "
            "pg_size_pretty(pg_total_relation_size('usage_daily')) AS daily"
        )
        return info
    finally:
        await conn.close()


def _print_ledger(info: dict, tenants: dict[str, str], month: tuple[date, date]) -> None:
    print(
        "   rows per tenant: "
        + ", ".join(f"{tenants.get(r['t'], r['t'][:8])} {r['n']:,}" for r in info["per_tenant"])
    )
    print(
        "   measured tenant per month (by created_at): "
        + ", ".join(f"{r['m']} {r['n']:,}" for r in info["by_month"])
    )
    print(
        "   by model: "
        + ", ".join(
            f"{r['model']} {r['n']:,} ({(r['cost'] or 0) / 1e6:,.2f} USD)" for r in info["by_model"]
        )
    )
    print(
        "   by outcome: "
        + ", ".join(f"{r['outcome']}/{r['job_status']} {r['n']:,}" for r in info["by_outcome"])
    )
    c = info["consistency"]
    same = c["ledger_n"] == c["rollup_n"] and c["ledger_cost"] == c["rollup_cost"]
    print(
        f"   usage_daily: {c['rollup_rows']:,} rows ({c['month_rollup_rows']} for the measured "
        f"tenant's month); rollups {'EQUAL' if same else 'DIFFER FROM'} the ledger: "
        f"{c['rollup_n']:,} requests / {c['rollup_cost'] / 1e6:,.6f} USD vs "
        f"{c['ledger_n']:,} / {c['ledger_cost'] / 1e6:,.6f} USD"
    )
    s = info["sizes"]
    print(
        f"   usage_records: heap {s['heap']}, indexes {s['idx']}; usage_daily {s['daily']}; "
        f"measured month {month[0]} .. {month[1]}: {info['export_rows']:,} ledger rows of the "
        "measured tenant"
    )


# =================================================================================================
# Measurement 1: reading usage
# =================================================================================================


def _timed_gets(
    client: Any, path: str, params: dict[str, str], headers: dict[str, str], n: int
) -> tuple[list[float], Any]:
    last = None
    for _ in range(5):  # warm-up: connection, pool, statement caches
        last = client.get(path, params=params, headers=headers)
        if last.status_code != 200:
            raise gb.BenchError(f"GET {path} {params}: {last.status_code} {last.text[:500]}")
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        last = client.get(path, params=params, headers=headers)
        lat.append(time.perf_counter() - t0)
        if last.status_code != 200:
            raise gb.BenchError(f"GET {path} {params}: {last.status_code} {last.text[:500]}")
    return sorted(lat), last


def _lat_line(label: str, lat: list[float], extra: str = "") -> str:
    return (
        f"   {label:<44} p50 {gb._pct(lat, 50) * 1000:6.1f}  p95 {gb._pct(lat, 95) * 1000:6.1f}  "
        f"max {lat[-1] * 1000:6.1f} ms  n={len(lat)}" + (f"  {extra}" if extra else "")
    )


class RssSampler:
    """VmRSS of a process every `interval` s in a thread (kB): before, peak, after."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kb(self) -> int:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def hwm_kb(self) -> int:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.rss_kb())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.before = self.rss_kb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self.rss_kb()

    @property
    def peak(self) -> int:
        return max([self.before, *self.samples, self.after])


async def _captured_sql(db: gb.Database, main: Tenant, month: tuple[date, date]) -> dict:
    """The services' own statements (captured from the engine), run under EXPLAIN ANALYZE."""
    from sqlalchemy import event

    from app.db.engine import create_engine, create_sessionmaker
    from app.usage import service

    engine = create_engine(db.url, pool_size=1)
    captured: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    tid = uuid.UUID(main.id)
    out: dict[str, Any] = {}
    try:
        sm = create_sessionmaker(engine)
        for group_by in ("day", "model"):
            async with sm() as session:
                await service.summary(
                    session, start=month[0], end=month[1], group_by=group_by, tenant_id=tid
                )
                n = 20
                t0 = time.perf_counter()
                for _ in range(n):
                    await service.summary(
                        session, start=month[0], end=month[1], group_by=group_by, tenant_id=tid
                    )
                out[f"inproc_{group_by}_ms"] = (time.perf_counter() - t0) / n * 1000
            out[f"summary_{group_by}"] = captured[-1]
        rows = service.export_rows(sm, start=month[0], end=month[1], tenant_id=tid)
        await rows.__anext__()  # the header and the first chunk: the query ran
        await rows.aclose()
        out["export"] = next(c for c in reversed(captured) if "usage_records" in c[0])
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
        for name in ("summary_day", "summary_model", "export"):
            statement, params = out[name]
            async with engine.connect() as conn:
                result = await conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                )
                out[name + "_plan"] = [r[0] for r in result]
    finally:
        await engine.dispose()
    return out


def _plan_summary(plan: list[str], lines: int) -> list[str]:
    keep = [ln for ln in plan if ln.startswith(("Execution Time", "Planning Time"))]
    nodes = [plan[0], *(ln for ln in plan[1:] if "->" in ln)][:lines]
    return [*nodes, *keep]


def _measure_reads(
    args: argparse.Namespace,
    db: gb.Database,
    api: Api,
    api_base: str,
    main: Tenant,
    month: tuple[date, date],
    quarter: tuple[date, date],
    info: dict,
) -> dict[str, Any]:
    import httpx

    from app.kit.money import micros_to_usd

    results: dict[str, Any] = {}
    print(
        f"\n== 1. reading usage: month {month[0]} .. {month[1]} (to exclusive), "
        f"{args.summary_requests} sequential requests per line after 5 warm-up, one keep-alive "
        "httpx client, API unpinned"
    )
    params = {"from": month[0].isoformat(), "to": month[1].isoformat()}
    with httpx.Client(base_url=api_base, timeout=60) as client:
        worst = 0.0
        for group_by in ("day", "month", "model"):
            lat, r = _timed_gets(
                client,
                "/v1/usage",
                {**params, "group_by": group_by},
                main.auth,
                args.summary_requests,
            )
            body = r.json()
            total = body["total_cost_usd"]
            expected = micros_to_usd(info["month_cost"])
            check = "total = ledger" if total == expected else f"TOTAL {total} != {expected}"
            print(
                _lat_line(
                    f"GET /v1/usage group_by={group_by}",
                    lat,
                    f"({len(body['data'])} groups, {len(r.content):,} B, {check})",
                )
            )
            results[f"summary_{group_by}"] = lat
            worst = max(worst, gb._pct(lat, 95) * 1000)
        verdict = "meets" if worst <= SUMMARY_TARGET_MS else "MISSES"
        print(
            f"   -> tenant month summary: worst p95 {worst:.1f} ms, {verdict} target "
            f"<= {SUMMARY_TARGET_MS:.0f} ms"
        )
        results["summary_worst_p95_ms"] = worst
        for label, rng in (("month", month), ("3 months", quarter)):
            for group_by in ("day", "month", "model"):
                lat, r = _timed_gets(
                    client,
                    "/v1/admin/usage",
                    {"from": rng[0].isoformat(), "to": rng[1].isoformat(), "group_by": group_by},
                    ADMIN,
                    args.summary_requests,
                )
                body = r.json()
                print(
                    _lat_line(
                        f"GET /v1/admin/usage {label} group_by={group_by}",
                        lat,
                        f"({len(body['data'])} groups, {len(r.content):,} B)",
                    )
                )
        lat, _ = _timed_gets(
            client, "/v1/usage", {**params, "group_by": "day"}, main.auth, args.summary_requests
        )
        print(_lat_line("GET /v1/usage group_by=day (again)", lat))

        sql = asyncio.run(_captured_sql(db, main, month))
        print(
            "   in-process service.summary() on one session (no HTTP, no auth): "
            f"group_by=day {sql['inproc_day_ms']:.1f} ms, group_by=model "
            f"{sql['inproc_model_ms']:.1f} ms per call"
        )
        for name in ("summary_day", "export"):
            print(f"   EXPLAIN ANALYZE of the {name.replace('_', ' group_by=')} statement:")
            for line in _plan_summary(sql[name + "_plan"], 6):
                print(f"      {line}")

        # -- the export, twice (the second under py-spy with --profile)
        print(
            f"   GET /v1/usage/export.csv for the month ({info['export_rows']:,} rows expected), "
            "streamed and counted by the client (lines only, not parsed):"
        )
        runs = args.exports + (1 if args.profile else 0)
        for i in range(runs):
            profiled = args.profile and i == runs - 1
            expected_s = results.get("export_s", 60.0) + 5
            with contextlib.ExitStack() as stack:
                if profiled:
                    stack.enter_context(
                        gb._profiling(args, api.popen.pid, "api-export", expected_s)
                    )
                res = _export_once(db, client, api, main, params)
            results["export_s"] = res["total_s"]
            lines = res["lines"] - 1  # the header
            check = (
                "row count = ledger"
                if lines == info["export_rows"]
                else f"ROWS {lines:,} != {info['export_rows']:,}"
            )
            print(
                f"   export #{i + 1}{' (under py-spy)' if profiled else ''}: {res['status']}, "
                f"{res['total_s']:.2f} s total, first byte {res['ttfb_s'] * 1000:.0f} ms, "
                f"{lines / res['total_s']:,.0f} rows/s, {res['bytes'] / 1e6:.1f} MB "
                f"({res['bytes'] / 1e6 / res['total_s']:.1f} MB/s, {res['chunks']:,} reads), "
                f"{check}"
            )
            print(
                f"      API RSS {res['rss_before'] / 1024:.0f} MB before, peak "
                f"{res['rss_peak'] / 1024:.0f} MB during ({len(res['rss_samples'])} samples), "
                f"{res['rss_after'] / 1024:.0f} MB after (VmHWM {res['hwm'] / 1024:.0f} MB); "
                f"CPU (share of one core): {res['cpu']}"
            )
            print(
                f"      the API's Postgres connections right after it: {res['pg_after']}; 5 s "
                f"later, still in a transaction after reading usage_records: {res['left_over']}; "
                f"SQLAlchemy 'garbage collector ... non-checked-in connection' warnings in the "
                f"API log so far: {res['gc_warnings']}"
            )
            results[f"export_{i}"] = res
    return results


def _export_once(
    db: gb.Database, client: Any, api: Api, main: Tenant, params: dict[str, str]
) -> dict[str, Any]:
    meter = _meter(db, api)
    n_bytes = lines = chunks = 0
    ttfb = None
    with RssSampler(api.popen.pid) as rss:
        meter.start()
        t0 = time.perf_counter()
        with client.stream(
            "GET", "/v1/usage/export.csv", params=params, headers=main.auth, timeout=600
        ) as r:
            status = r.status_code
            for chunk in r.iter_raw():
                if ttfb is None:
                    ttfb = time.perf_counter() - t0
                chunks += 1
                n_bytes += len(chunk)
                lines += chunk.count(b"\n")
        total = time.perf_counter() - t0
        meter.stop()
    pg_after = asyncio.run(_api_backends(db))
    time.sleep(5)  # a correct export returned its connection when the response ended
    left_over = asyncio.run(_export_left_over(db))
    gc_warnings = api.log.read_text(errors="replace").count(
        "SAWarning: The garbage collector is trying to clean up non-checked-in connection"
    )
    return {
        "gc_warnings": gc_warnings,
        "left_over": left_over,
        "status": status,
        "total_s": total,
        "ttfb_s": ttfb or total,
        "bytes": n_bytes,
        "lines": lines,
        "chunks": chunks,
        "rss_before": rss.before,
        "rss_peak": rss.peak,
        "rss_after": rss.after,
        "rss_samples": rss.samples,
        "hwm": rss.hwm_kb(),
        "cpu": meter.share(),
        "pg_after": pg_after,
    }


async def _export_left_over(db: gb.Database) -> str:
    """The API's connections still in a transaction whose last statement read the ledger."""
    conn = await _connect(db)
    try:
        rows = await conn.fetch(
            "SELECT state, now() - xact_start AS xact_age, now() - state_change AS idle FROM "
            "pg_stat_activity WHERE datname = current_database() AND application_name = 'foley' "
            "AND state <> 'idle' AND query LIKE '%FROM usage_records%'"
        )
    finally:
        await conn.close()
    return (
        "; ".join(
            f"{r['state']} (transaction open {r['xact_age'].total_seconds():.0f} s, idle "
            f"{r['idle'].total_seconds():.0f} s)"
            for r in rows
        )
        or "none"
    )


async def _api_backends(db: gb.Database) -> str:
    conn = await _connect(db)
    try:
        rows = await conn.fetch(
            "SELECT state, count(*) AS n, max(now() - state_change) AS age FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'foley' GROUP BY state "
            "ORDER BY state"
        )
    finally:
        await conn.close()
    return (
        ", ".join(
            f"{r['n']} {r['state']}"
            + (f" (oldest {r['age'].total_seconds():.1f} s)" if r["state"] != "idle" else "")
            for r in rows
        )
        or "none"
    )


# =================================================================================================
# Measurement 2: create-path cost of budgets + limits
# =================================================================================================

HUGE_BUDGET = {"budget_usd": "1000000000.00"}  # 1e9 USD: nothing is ever refused
HUGE_RATE = {"rate_limit_per_minute": 1_000_000_000}  # never hit


def _create_tenants(client: Any, breakdown: bool) -> dict[str, list[Tenant]]:
    configs: dict[str, list[Tenant]] = {
        "OFF, 1 tenant": [_new_tenant(client, "create-off")],
        "ON, 1 tenant": [_new_tenant(client, "create-on", **HUGE_BUDGET, **HUGE_RATE)],
    }
    if breakdown:
        configs["budget only, 1 tenant"] = [_new_tenant(client, "create-budget", **HUGE_BUDGET)]
        configs["rate limit only, 1 tenant"] = [_new_tenant(client, "create-rate", **HUGE_RATE)]
    configs["OFF, 8 tenants"] = [_new_tenant(client, f"create-off-{i}") for i in range(8)]
    configs["ON, 8 tenants"] = [
        _new_tenant(client, f"create-on-{i}", **HUGE_BUDGET, **HUGE_RATE) for i in range(8)
    ]
    return configs


class PgActivity:
    """Samples pg_stat_activity for the API's connections (application_name 'foley') from a
    thread with its own connection: how many wait on a lock (the budget-period row), how many
    are open, and stalls: every API connection either idle in a transaction or waiting on a lock
    (Postgres waits for the API, the API for something else), with what they last ran."""

    def __init__(self, db: gb.Database, interval: float = 0.1) -> None:
        self.db, self.interval = db, interval
        self.samples: list[tuple[int, int]] = []  # (connections, lock waiters)
        self.waiters: dict[str, int] = {}  # "statement (lock kind)" -> waiters summed over samples
        self.streak = self.max_streak = 0
        self.snapshot: list[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await _connect(self.db)
        mine = "datname = current_database() AND application_name = 'foley'"
        try:
            while not self._stop.is_set():
                row = await conn.fetchrow(
                    "SELECT count(*) AS n, count(*) FILTER (WHERE wait_event_type = 'Lock') AS w, "
                    "count(*) FILTER (WHERE state = 'idle in transaction') AS i "
                    f"FROM pg_stat_activity WHERE {mine}"
                )
                self.samples.append((row["n"], row["w"]))
                if row["w"]:
                    for r in await conn.fetch(
                        "SELECT wait_event AS e, left(query, 60) AS q, count(*) AS n "
                        f"FROM pg_stat_activity WHERE {mine} AND wait_event_type = 'Lock' "
                        "GROUP BY 1, 2"
                    ):
                        key = f"{_statement_label(r['q'])} ({r['e']})"
                        self.waiters[key] = self.waiters.get(key, 0) + r["n"]
                # nobody works: each connection waits for the API or for a lock
                stalled = row["n"] > 0 and row["i"] > 0 and row["i"] + row["w"] == row["n"]
                self.streak = self.streak + 1 if stalled else 0
                self.max_streak = max(self.max_streak, self.streak)
                if self.snapshot is None and self.streak * self.interval >= 2.0:
                    self.snapshot = await conn.fetch(
                        "SELECT state || coalesce(' on ' || wait_event_type || ':' || wait_event, "
                        "'') AS state, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS q, "
                        f"count(*) AS n FROM pg_stat_activity WHERE {mine} GROUP BY 1, 2 "
                        "ORDER BY 3 DESC"
                    )
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def __enter__(self) -> PgActivity:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def lock_breakdown(self, top: int = 3) -> str:
        """Mean waiters per statement and lock kind, largest first."""
        n = max(1, len(self.samples))
        ranked = sorted(self.waiters.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"{k} {v / n:.1f}" for k, v in ranked)

    def summary(self) -> tuple[float, int, int, float]:
        """Lock waiters mean and max, connections max, longest stall (s)."""
        if not self.samples:
            return 0.0, 0, 0, 0.0
        waits = [w for _, w in self.samples]
        return (
            statistics.mean(waits),
            max(waits),
            max(n for n, _ in self.samples),
            self.max_streak * self.interval,
        )


def _statement_label(query: str) -> str:
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


async def _drain(db: gb.Database, within_s: float) -> float:
    """Wait until none of the API's connections is busy (left-over requests of a stalled run
    finish or time out server-side); returns the seconds it took."""
    conn = await _connect(db)
    t0 = time.perf_counter()
    quiet = 0
    try:
        while time.perf_counter() - t0 < within_s and quiet < 5:
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                "application_name = 'foley' AND state <> 'idle' "
                # the export's connection, left in a transaction until a GC pass (see the
                # export's report): not a request of this run
                "AND query NOT LIKE '%FROM usage_records%'"
            )
            quiet = quiet + 1 if busy == 0 else 0
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return time.perf_counter() - t0


POOL_TIMEOUT = "QueuePool limit of size"


def _measure_creates(
    args: argparse.Namespace,
    db: gb.Database,
    api: Api,
    api_port: int,
    configs: dict[str, list[Tenant]],
) -> dict[tuple[str, int], float]:
    print(
        f"\n== 2. create path: POST /v1/jobs (Kling), closed loop, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s (<= {args.max_requests} requests) per run, {args.rounds} round(s) "
        f"in alternating order, API on core {args.server_core}, load generator on core "
        f"{args.client_core}, Postgres unpinned; worker not running; a request unanswered after "
        f"{args.request_timeout:g} s counts as an error (status 0)"
    )
    print(
        "   API/pg CPU: CPU ms per answered request (warm-up included); lockq: backends of the API "
        "waiting on a lock in Postgres, mean / max (pg_stat_activity every 0.1 s); conns: the "
        "API's open Postgres connections, max; stall s: longest time every API connection was "
        "idle in a transaction or waiting on a lock (none working); pool t/o: 'QueuePool "
        "limit ... timed out' errors in the API log during the run"
    )
    print(
        f"   {'round':>5} {'conc':>4}  {'configuration':<25} {'req/s':>6} {'ok':>6} {'err':>5} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'API CPU':>7} {'pg CPU':>6} "
        f"{'lockq':>9} {'conns':>5} {'stall s':>7} {'pool t/o':>8}"
    )
    runs: dict[tuple[str, int], list[tuple[float, int]]] = {}  # (req/s, errors) per run
    errors: dict[tuple[str, int], str] = {}  # the first error of a configuration
    wedged: set[tuple[str, int]] = set()  # no answer within the timeout: not repeated
    names = list(configs)
    for rnd in range(1, args.rounds + 1):
        order = names if rnd % 2 else list(reversed(names))
        for conc in args.concurrency:
            for name in order:
                if (name, conc) in wedged:
                    print(f"   {rnd:>5} {conc:>4}  {name:<25} not repeated: it wedged the API")
                    continue
                tenants = configs[name]
                spec = {
                    "host": HOST,
                    "port": api_port,
                    "path": "/v1/jobs",
                    "headers_list": [t.auth for t in tenants],
                    "body": KLING_BODY,
                    "concurrency": conc,
                    "warmup_s": args.warmup,
                    "duration_s": args.duration,
                    "max_requests": args.max_requests,
                    "request_timeout_s": args.request_timeout,
                }
                log_before = api.log.read_text(errors="replace").count(POOL_TIMEOUT)
                meter = _meter(db, api).start()
                with PgActivity(db) as activity:
                    result = _run_loadgen(
                        spec,
                        args.client_core,
                        timeout=args.warmup + args.duration + 2 * args.request_timeout + 60,
                    )
                meter.stop()
                pool_timeouts = api.log.read_text(errors="replace").count(POOL_TIMEOUT) - log_before
                runs.setdefault((name, conc), []).append((result["rps"], result["errors"]))
                answered = max(1, result["answered"])
                pg = (
                    f"{meter.used['postgres'] / answered * 1000:>6.2f}"
                    if db.embedded
                    else f"{'n/a':>6}"
                )
                lock_mean, lock_max, conns, stall = activity.summary()
                print(
                    f"   {rnd:>5} {conc:>4}  {name:<25} {result['rps']:>6.0f} {result['ok']:>6} "
                    f"{result['errors']:>5} {result['lat_p50_ms'] or 0:>7.1f} "
                    f"{result['lat_p99_ms'] or 0:>7.1f} {result['max_s'] * 1000:>7.0f} "
                    f"{meter.used['API'] / answered * 1000:>7.2f} {pg} "
                    f"{lock_mean:>5.1f}/{lock_max:<3} {conns:>5} {stall:>7.1f} {pool_timeouts:>8}"
                )
                if lock_mean >= 0.5:
                    print(f"         lock waits (mean per sample): {activity.lock_breakdown()}")
                if activity.snapshot:
                    print(
                        "         stalled: "
                        + "; ".join(f"{r['n']} {r['state']}: {r['q']}" for r in activity.snapshot)
                    )
                if result["first_error"]:
                    print(f"         statuses {result['statuses']}; first: {result['first_error']}")
                    errors.setdefault((name, conc), result["first_error"])
                if result["statuses"].get("0") or stall >= 5:
                    # Left-over requests keep the pool wedged for minutes: start a new process.
                    wedged.add((name, conc))
                    api.restart(args.server_core)
                    print(
                        f"         (the API stayed wedged: restarted, pid {api.popen.pid}, log "
                        f"{api.log.name}; this configuration is not repeated)"
                    )
                else:
                    drained = asyncio.run(_drain(db, 30))
                    if drained > 2:
                        print(f"         (the API needed {drained:.0f} s to drain)")
                if not api.alive():
                    raise gb.BenchError(f"the API died; log {api.log}:\n{api.tail()}")
    # the median of the runs without errors, when there is one (a sporadic 500 is reported, not
    # averaged in); a wedged configuration's only run counts as what it is: ~0 req/s
    medians = {
        key: statistics.median([rps for rps, n_err in v if not n_err] or [rps for rps, _ in v])
        for key, v in runs.items()
    }

    def fmt(name: str, conc: int) -> str:
        if (name, conc) in wedged:
            mark = " (WEDGED: no answer)"
        elif all(n_err for _, n_err in runs[(name, conc)]):
            mark = " (ERRORS in every run)"
        elif (name, conc) in errors:
            mark = " (a run with errors left out)"
        else:
            mark = ""
        return f"{medians[(name, conc)]:.0f}{mark}"

    print("   median req/s (same server, same run):")
    for conc in args.concurrency:
        print(f"   conc {conc:>3}: " + "; ".join(f"{n} {fmt(n, conc)}" for n in names))

    def ratio(a: str, b: str, conc: int) -> str:
        den = medians[(b, conc)]
        value = f"{medians[(a, conc)] / den:.2f}" if den else "n/a"
        return value + (" (wedged)" if (a, conc) in wedged else "")

    for conc in args.concurrency:
        parts = [
            f"ON/OFF (1 tenant) = {ratio('ON, 1 tenant', 'OFF, 1 tenant', conc)}",
            "ON over 8 tenants / OFF (1 tenant) = " + ratio("ON, 8 tenants", "OFF, 1 tenant", conc),
            f"ON over 8 / OFF over 8 = {ratio('ON, 8 tenants', 'OFF, 8 tenants', conc)}",
        ]
        for extra in ("budget only, 1 tenant", "rate limit only, 1 tenant"):
            if (extra, conc) in medians:
                parts.append(f"{extra.split(',')[0]}/OFF = {ratio(extra, 'OFF, 1 tenant', conc)}")
        print(f"   RATIO conc {conc:>3}: " + "; ".join(parts))
    if errors:
        print(
            "   !! errors in: "
            + "; ".join(f"{n} at {c}: {e[:120]}" for (n, c), e in errors.items())
        )
    return medians


def _profile_create(
    args: argparse.Namespace,
    api: Api,
    api_port: int,
    tenants: list[Tenant],
    conc: int,
    label: str,
) -> None:
    seconds = max(5.0, args.duration)
    spec = {
        "host": HOST,
        "port": api_port,
        "path": "/v1/jobs",
        "headers_list": [t.auth for t in tenants],
        "body": KLING_BODY,
        "concurrency": conc,
        "warmup_s": 0.5,
        "duration_s": seconds + 1,
        "max_requests": args.max_requests,
        "request_timeout_s": args.request_timeout,
    }
    with gb._profiling(args, api.popen.pid, f"api-create-{label}-c{conc}", seconds):
        _run_loadgen(spec, args.client_core, timeout=seconds + 2 * args.request_timeout + 60)


# =================================================================================================
# main
# =================================================================================================


def _args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join((__doc__ or "").split("\n\n")[0].split()))
    g = p.add_argument_group("setup")
    g.add_argument("--rows", type=int, default=1_000_000, help="measured tenant's rows [1e6]")
    g.add_argument("--other-tenants", type=int, default=4, help="other tenants [4]")
    g.add_argument(
        "--other-rows", type=int, default=100_000, help="rows of each other tenant [1e5]"
    )
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
    g.add_argument("--warmup", type=float, default=1.5, help="seconds per run [1.5]")
    g.add_argument("--duration", type=float, default=4.0, help="measured seconds per run [4]")
    g.add_argument("--max-requests", type=int, default=20_000, help="per run [20000]")
    g.add_argument("--rounds", type=int, default=2, help="rounds of every configuration [2]")
    g.add_argument(
        "--request-timeout",
        type=float,
        default=15.0,
        help="seconds a create may take before it counts as an error [15]; a run with such "
        "errors is not repeated and the API is restarted after it",
    )
    g.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the budget-only and rate-limit-only configurations",
    )
    g = p.add_argument_group("what to run")
    g.add_argument("--skip-reads", action="store_true")
    g.add_argument("--skip-creates", action="store_true")
    g.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (`uv tool run py-spy`, never in the project venv) the API during the second "
        "export and an ON create run; the summary is profiled anyway if it misses its target",
    )
    g.add_argument("--profile-top", type=int, default=20)
    g.add_argument("--no-pin", action="store_true", help="do not use taskset / affinity")
    g.add_argument(
        "--api-app",
        default="app.main:create_app",
        help="uvicorn factory of the API [app.main:create_app]; for measuring a variant (e.g. a "
        "suggested fix kept outside app/) under the same load",
    )
    g.add_argument("--api-app-dir", type=Path, default=None, help="directory of --api-app's module")
    g.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "bench" / "out" / "usage_bench",
        help="process logs and profiles [bench/out/usage_bench]",
    )
    args = p.parse_args(argv)
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    args.server_core = 0 if pin else None
    args.client_core = 1 if pin else None
    return args


def _code_note() -> str:
    """Which code is measured: HEAD, and whether app/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"], cwd=REPO, capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return "code      (git not available)"
    state = f"{len(changed)} file(s) under app/ uncommitted" if changed else "app/ clean"
    return f"code      HEAD {head or '?'}, {state}"


def _profile_summary(
    args: argparse.Namespace, api: Api, api_base: str, main: Tenant, month: tuple[date, date]
) -> None:
    """The summary missed its target: sample the API while it answers summaries for a while."""
    import httpx

    seconds = 8.0
    forced = argparse.Namespace(**{**vars(args), "profile": True})
    params = {"from": month[0].isoformat(), "to": month[1].isoformat(), "group_by": "day"}
    with (
        httpx.Client(base_url=api_base, timeout=60) as client,
        gb._profiling(forced, api.popen.pid, "api-summary", seconds),
    ):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.get("/v1/usage", params=params, headers=main.auth)


def main(argv: Sequence[str]) -> int:
    args = _args(argv)
    # SIGTERM too unwinds through the `finally` below, which stops every child
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("command   " + f"cd {shlex.quote(os.getcwd())} && " + shlex.join([PY, *sys.argv]))
    if args.api_app != "app.main:create_app":
        print(f"API app   {args.api_app} (a VARIANT, not the gateway as shipped)")
    for note in gb._machine_notes():
        print(note)
    print(_code_note())
    busy = gb._others_busy()
    if busy:
        print(f"!! other busy processes (figures will suffer): {busy}")
    sys.path.insert(0, str(REPO))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="foley-usage-bench-data-"))
    procs = gb.Procs()
    db: gb.Database | None = None
    t_run = time.perf_counter()
    try:
        import httpx

        db = _create_database()
        print(gb._pg_notes(db))
        print(f"logs      {args.out_dir}")
        api_port = gb._free_port()
        api_base = f"http://{HOST}:{api_port}"
        # Only this run's settings: no FOLEY_* of the caller's shell leaks in.
        api_env = {
            k: v for k, v in os.environ.items() if not k.startswith("FOLEY_") and k != "FAL_KEY"
        }
        api_env |= {
            "FOLEY_DATABASE_URL": db.url,
            "FOLEY_ADMIN_TOKEN": ADMIN_TOKEN,
            "FOLEY_ENV": "development",
            "FOLEY_DATA_DIR": str(data_dir / "gateway"),
        }
        if args.api_app_dir:  # the variant's module, importing app.* from the repository
            api_env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO), *filter(None, [api_env.get("PYTHONPATH")])]
            )
        api = Api(procs, api_env, api_port, args.out_dir, args.api_app, args.api_app_dir)
        api.start()

        today = datetime.now(UTC).date()
        this_month = today.replace(day=1)
        quarter = (_month_add(this_month, -3), this_month)
        month = (_month_add(this_month, -2), _month_add(this_month, -1))

        with httpx.Client(base_url=api_base, timeout=30) as client:
            main_tenant = _new_tenant(client, "usage-bench")
            others = [_new_tenant(client, f"usage-other-{i}") for i in range(args.other_tenants)]
            configs = _create_tenants(client, not args.no_breakdown)

        if not args.skip_reads:
            _load_ledger(
                db, main_tenant, others, args.rows, args.other_rows, *quarter, args.load_jobs
            )
            info = asyncio.run(_describe_ledger(db, main_tenant, month))
            names = {main_tenant.id: "measured", **{o.id: o.name for o in others}}
            _print_ledger(info, names, month)
            reads = _measure_reads(args, db, api, api_base, main_tenant, month, quarter, info)
            if reads["summary_worst_p95_ms"] > SUMMARY_TARGET_MS:
                _profile_summary(args, api, api_base, main_tenant, month)

        if not args.skip_creates:
            # A fresh process, pinned from its start: nothing left over from measurement 1 (the
            # export leaves a connection in a transaction until a GC pass, see its report).
            api.restart(args.server_core)
            print(f"\n(measurement 2 runs on a new API process, pid {api.popen.pid})")
            _measure_creates(args, db, api, api_port, configs)
            if args.profile:
                conc = min(args.concurrency)
                _profile_create(args, api, api_port, configs["ON, 1 tenant"], conc, "on")
                _profile_create(args, api, api_port, configs["OFF, 1 tenant"], conc, "off")
        return 0
    except gb.BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if db is not None:
            with contextlib.suppress(Exception):
                gb.drop_database(db)
        shutil.rmtree(data_dir, ignore_errors=True)
        load = os.getloadavg()
        print(
            f"\nwall time {time.perf_counter() - t_run:.0f} s; load average at the end: "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))
