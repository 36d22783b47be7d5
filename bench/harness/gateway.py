"""The gateway as a benchmark runs it: the API (uvicorn or `foley api`), the worker, tenants."""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.database import Database
from harness.procs import (
    HOST,
    PY,
    REPO,
    BenchError,
    Proc,
    Procs,
    clean_env,
    free_port,
    taskset,
    uvicorn_cmd,
)

ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex[:12]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GATEWAY_APP = "app.main:create_app"


def gateway_env(db: Database, data_dir: Path, emu: Any = None, **settings: str) -> dict[str, str]:
    """The only settings the gateway's processes get: the database, the admin token,
    development mode, a data directory, the emulator as fal (when given), and `settings`."""
    env = clean_env(
        FOLEY_DATABASE_URL=db.url,
        FOLEY_ADMIN_TOKEN=ADMIN_TOKEN,
        FOLEY_ENV="development",
        FOLEY_DATA_DIR=str(data_dir),
    )
    if emu is not None:
        env |= {
            "FOLEY_FAL_QUEUE_URL": emu.base_url,
            "FOLEY_FAL_REST_URL": emu.base_url,
            "FOLEY_FAL_CDN_URL": emu.base_url,
            "FAL_KEY": emu.fal_key,
        }
    return env | settings


@dataclass
class Tenant:
    name: str
    id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class Api:
    """The gateway's API, one process: `uvicorn <app> --factory` (uvloop, httptools, no access
    log), or `python -m app.entrypoints api` (= `foley api`) with `cli`; its log is `<name>.log` in
    `out_dir`. `restart` starts a new process with the same settings and port (and log file
    `<name>-2.log`, ...)."""

    def __init__(
        self,
        procs: Procs,
        env: dict[str, str],
        out_dir: Path,
        *,
        app: str = GATEWAY_APP,
        app_dir: Path | None = None,
        cli: bool = False,
        name: str = "API",
    ) -> None:
        self.procs, self.env, self.out_dir, self.name = procs, dict(env), out_dir, name
        self.app, self.app_dir, self.cli = app, app_dir, cli
        if app_dir is not None:  # the variant's module, importing app.* from the repository
            self.env["PYTHONPATH"] = ":".join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.starts = 0
        self.proc: Proc | None = None

    def start(self, core: int | None = None) -> Api:
        self.starts += 1
        stem = self.name.lower()
        log = self.out_dir / (f"{stem}.log" if self.starts == 1 else f"{stem}-{self.starts}.log")
        if self.cli:
            cmd = [PY, "-m", "app.entrypoints", "api", "--host", HOST, "--port", str(self.port)]
        else:
            extra = ["--app-dir", str(self.app_dir)] if self.app_dir else []
            cmd = uvicorn_cmd(self.app, self.port, *extra)
        self.proc = self.procs.serve(self.name, [*taskset(core), *cmd], self.env, log, self.health)
        return self

    def restart(self, core: int | None = None) -> None:
        self.procs.stop(self.running)
        self.start(core)

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)

    @property
    def health(self) -> str:
        return f"{self.base}/healthz"

    @property
    def running(self) -> Proc:
        if self.proc is None:
            raise BenchError("the API was never started")
        return self.proc

    @property
    def pid(self) -> int:
        return self.running.pid

    @property
    def log(self) -> Path:
        return self.running.log

    def new_tenant(self, name: str, **patch: Any) -> Tenant:
        """A tenant (PATCHed with `patch`: budget, limits) and a key, through the admin API."""
        import httpx

        with httpx.Client(base_url=self.base, headers=ADMIN, timeout=30) as client:
            r = client.post("/v1/admin/tenants", json={"name": name})
            if r.status_code != 201:
                raise BenchError(f"creating tenant {name}: {r.status_code} {r.text}")
            tid = r.json()["id"]
            if patch:
                r = client.patch(f"/v1/admin/tenants/{tid}", json=patch)
                if r.status_code != 200:
                    raise BenchError(f"PATCH tenant {name}: {r.status_code} {r.text}")
            r = client.post(f"/v1/admin/tenants/{tid}/keys", json={"name": "bench"})
            if r.status_code != 201:
                raise BenchError(f"creating a key for {name}: {r.status_code} {r.text}")
            return Tenant(name, tid, r.json()["key"])


def start_worker(
    procs: Procs, env: dict[str, str], log: Path, cmd: str | None = None, **settings: str
) -> Proc:
    """`python -m app.entrypoints worker` (= `foley worker`, the code beside this harness), or
    `cmd`."""
    argv = shlex.split(cmd) if cmd else [PY, "-m", "app.entrypoints", "worker"]
    return procs.spawn("worker", argv, env | settings, log)


async def _wait_jobs(db: Database, ids: list[uuid.UUID], pending: str, within_s: float) -> int:
    from harness.database import sql

    deadline = time.monotonic() + within_s
    left = len(ids)
    while time.monotonic() < deadline:
        rows = await sql(
            db, f"SELECT count(*) AS n FROM jobs WHERE id = ANY($1) AND {pending}", ids
        )
        left = rows[0]["n"]
        if left == 0:
            break
        await asyncio.sleep(0.25)
    return left


def wait_submitted(db: Database, ids: list[uuid.UUID], within_s: float) -> int:
    """Wait until none of these jobs is still to be submitted; how many still are."""
    pending = "submit_state IN ('pending', 'sending')"
    return asyncio.run(_wait_jobs(db, ids, pending, within_s))


def wait_finished(db: Database, ids: list[uuid.UUID], within_s: float) -> int:
    """Wait until every one of these jobs is in a terminal state; how many are not."""
    pending = "status NOT IN ('succeeded', 'failed', 'canceled', 'aborted')"
    return asyncio.run(_wait_jobs(db, ids, pending, within_s))


TERMINAL = ("succeeded", "failed", "canceled", "aborted")


def job_ended(
    client: Any, job_id: str, within_s: float = 60, look_s: float = 0.002
) -> dict[str, Any]:
    """The job as the API shows it once it ended (an httpx.Client on the API with a tenant's
    key), looked at every `look_s`."""
    deadline = time.monotonic() + within_s
    while True:
        job = dict(client.get(f"/v1/jobs/{job_id}").json())
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise BenchError(f"job {job_id} still {job['status']} after {within_s} s")
        time.sleep(look_s)  # the next look
