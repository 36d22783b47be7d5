"""The chaos scenarios: the gateway's real processes (one `foley api`, three
`foley worker`, the fal emulator, an embedded Postgres of the run's own) under faults, and the
figures each is judged by. `bench/chaos_bench.py` runs them at full size and prints them;
`tests/e2e/test_chaos.py` runs them small and asserts the same invariants.

Under `make chaos` every scenario gets a cluster of its own (a fresh database, the emulator
reset, a fresh API and workers: `run_alone`), so its figures and `foley usage reconcile` are its
own; the bounded test runs the four on one cluster. Each is judged the same way: every accepted
job must end (none lost), none may have created two requests at fal (counted in the emulator's
request log by the `foley.job` tag of X-Fal-Tags), the ledger must equal the emulator's bill, and
no job may fail as an ambiguous submit fal never received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from app.models.job import TERMINAL_STATUSES
from harness import fal
from harness.database import Database, OwnPostgres, connect, sql
from harness.gateway import Api, Tenant, gateway_env, start_worker, wait_finished
from harness.procs import PY, REPO, BenchError, Proc, Procs

# The app's own list: a job aborted by its Cancel-After is as finished as any other.
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)

MODELS = ("thinksound", "thinksound-audio", "kling-video-to-audio")
AMBIGUOUS = "upstream_submit_ambiguous"
# The account's concurrency at the emulator and the gateway's view of it (its default).
FAL_SLOTS = 10

# "30 % mixed upstream faults": about 3 jobs in 10 meet at least one of them
# (1 - 0.86 * 0.94 * 0.84 ≈ 0.32).
MIXED_FAULTS: dict[str, Any] = {
    "ingress_error_rates": {"502": 0.03, "503": 0.03, "429": 0.03},
    "ambiguous_submit_rate": 0.05,
    "failure_rates": {
        "runner_disconnected": 0.02,
        "runner_server_error": 0.02,
        "content_policy_violation": 0.02,
    },
    "webhook_drop_rate": 0.04,
    "webhook_duplicate_rate": 0.04,
    "webhook_reorder_rate": 0.04,
    "webhook_bad_signature_rate": 0.04,
}


@dataclass
class Sizes:
    """How big each scenario is. The defaults are `make chaos`'s; the test runs them small."""

    jobs: int = 300  # per scenario (kills, faults); the outage and the API kills size by time
    slots: int = FAL_SLOTS  # the account's concurrency at the emulator, and the gateway's
    rate: float = 10.0  # creates per second
    run_time: str = "1..3"  # seconds each request runs at "fal" (the emulator's knob)
    settle_s: float = 300.0  # after the last create, how long accepted jobs may take to end
    # workers killed
    kills: int = 20
    kill_every_s: float = 4.0
    # only a worker holding a queued job it claimed to dispatch (else any lease holder)
    kill_dispatching: bool = False
    kill_run_time: str = "2..4"  # longer runs: a backlog lasts through the kills
    kill_create_rate: float = 30.0
    baseline_s: float = 10.0  # dispatch at its normal rate, before the first kill
    recovery_s: float = 5.0  # dispatch back to its normal rate within this
    # database outage
    outage_before_s: float = 10.0
    outage_s: float = 10.0
    outage_after_s: float = 10.0
    # API killed
    api_rounds: int = 7
    in_flight: int = 40
    retry_deadline_s: float = 90.0
    # FOLEY_* settings of the gateway's processes beyond the defaults (none for `make chaos`:
    # what an operator runs)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """One scenario's figures, and the conditions it failed."""

    name: str
    accepted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failed_by_code: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # accepted, then missing or never ended
    requests_per_job: Counter[int] = field(default_factory=Counter)  # created requests -> jobs
    double_submits: list[str] = field(default_factory=list)
    ambiguous_unreceived: list[str] = field(default_factory=list)
    reconcile_exit: int | None = None
    reconcile: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # the scenario's own
    failures: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> int:
        return sum(n for s, n in self.statuses.items() if s in TERMINAL)

    def require(self, ok: bool, condition: str) -> None:
        if not ok:
            self.failures.append(condition)

    def differences(self) -> Counter[str]:
        return Counter(d["kind"] for d in self.reconcile.get("differences", []))


def job_body(i: int, video_url: str, scenario: str, **metadata: str) -> dict[str, Any]:
    """The i-th job of a scenario: the three models in turn."""
    model = MODELS[i % len(MODELS)]
    inp: dict[str, Any] = {"video_url": video_url, "prompt": "a ball bouncing on a wooden floor"}
    if model != "kling-video-to-audio":
        inp["seed"] = i
    return {"model": model, "input": inp, "metadata": {"chaos": scenario, **metadata}}


# Every fault knob off: a scenario sets its own on top (a cluster may serve several).
CALM: dict[str, Any] = {
    "ingress_error_rates": {},
    "ambiguous_submit_rate": 0.0,
    "failure_rates": {},
    "webhook_drop_rate": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_reorder_rate": 0.0,
    "webhook_bad_signature_rate": 0.0,
}


# --- the cluster --------------------------------------------------------------------------------
class Cluster:
    """The processes of one scenario: `foley api` and `workers` × `foley worker` on a fresh
    database of `pg`, with the (shared, reset) emulator as fal, webhooks to the API and the
    emulator's platform API for lookups and reconcile. Everything else is the gateway's
    defaults (leases, grace periods, policies): what an operator runs."""

    def __init__(
        self,
        procs: Procs,
        out_dir: Path,
        pg: OwnPostgres,
        emu: Any,
        video_url: str,
        *,
        workers: int = 3,
    ) -> None:
        self.procs, self.out_dir, self.pg, self.emu = procs, out_dir, pg, emu
        self.video_url, self.n_workers = video_url, workers
        self.workers: list[Proc] = []
        self.spawned = 0
        self.db: Database | None = None
        self.api: Api | None = None
        self.tenant: Tenant | None = None
        self.client: httpx.AsyncClient | None = None
        self.name = ""

    async def open(self, name: str, sizes: Sizes) -> None:
        """A fresh database, the emulator reset (its bill starts from nothing), the API and
        the workers started."""
        self.name = name
        self.opened_at = window_start()
        db_name = f"chaos_{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.db = await asyncio.to_thread(self.pg.database, db_name)
        await asyncio.to_thread(self.emu.reset)
        env = gateway_env(
            self.db,
            self.out_dir / "data",
            self.emu,
            FOLEY_FAL_PLATFORM_URL=f"{self.emu.base_url}/v1",
            FOLEY_FAL_ADMIN_KEY=self.emu.admin_key,
            FOLEY_FAL_CONCURRENCY=str(sizes.slots),
            FOLEY_LOG_FORMAT="json",
            **sizes.settings,
        )
        self.api = Api(self.procs, env, self.out_dir, cli=True, name=f"api-{name}")
        self.api.env["FOLEY_PUBLIC_URL"] = self.api.base  # fal answers by webhook too
        for _ in range(self.n_workers):
            self.add_worker()
        await asyncio.gather(
            asyncio.to_thread(self.api.start), *(worker_ready(w) for w in self.workers)
        )
        self.tenant = await asyncio.to_thread(self.api.new_tenant, f"chaos-{name}")
        self.client = httpx.AsyncClient(
            base_url=self.api.base,
            headers=self.tenant.auth,
            timeout=30,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def knobs(self, sizes: Sizes, **knobs: Any) -> None:
        """The emulator's knobs for a scenario: `knobs` on top of no faults at all."""
        await asyncio.to_thread(
            self.emu.control,
            **{**CALM, "concurrency": sizes.slots, "run_time": sizes.run_time, **knobs},
        )

    async def requests_since(self, since: float) -> list[dict[str, Any]]:
        """The POSTs in the emulator's request log from `since` (time.time()) on."""
        entries = await asyncio.to_thread(self.emu.requests, method="POST")
        return [e for e in entries if fal.logged_at(e) >= since]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        for proc in self.workers:
            await asyncio.to_thread(self.procs.stop, proc)
        self.workers.clear()
        if self.api is not None:
            await asyncio.to_thread(self.api.stop)

    @property
    def env(self) -> dict[str, str]:
        return self.running_api.env

    @property
    def running_api(self) -> Api:
        if self.api is None:
            raise BenchError("the cluster is not open")
        return self.api

    @property
    def database(self) -> Database:
        if self.db is None:
            raise BenchError("the cluster is not open")
        return self.db

    @property
    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            raise BenchError("the cluster is not open")
        return self.client

    def add_worker(self) -> Proc:
        self.spawned += 1
        log = self.out_dir / f"{self.name}-worker-{self.spawned}.log"
        proc = start_worker(self.procs, self.env, log)
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: Proc) -> None:
        """SIGKILL: no shutdown, no lease given back."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)
        self.workers.remove(proc)
        self.procs.stop(proc)  # dead already: only forgotten

    def kill_api(self) -> None:
        proc = self.running_api.running
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)
        self.procs.stop(proc)

    async def create(
        self, i: int, *, key: str | None = None, **metadata: str
    ) -> httpx.Response | None:
        """POST the i-th job: its answer, None when the connection failed (the API killed)."""
        body = job_body(i, self.video_url, self.name, **metadata)
        headers = {"Idempotency-Key": key} if key else None
        try:
            return await self.http.post("/v1/jobs", json=body, headers=headers)
        except httpx.HTTPError:
            return None

    async def create_at_rate(self, n: int, rate: float, accepted: list[str]) -> Counter[str]:
        """POST n jobs at a steady rate; ids of the 202s go to `accepted`, as they come. The
        answers by status."""
        answers: Counter[str] = Counter()

        async def one(i: int) -> None:
            r = await self.create(i)
            if r is None:
                answers["no answer"] += 1
                return
            if r.status_code == 202:
                accepted.append(r.json()["id"])
            label = str(r.status_code)
            answers[label if r.status_code < 500 else f"{label} {problem_code(r)}"] += 1

        await at_rate(n, rate, one)
        return answers


async def worker_ready(proc: Proc, within_s: float = 120.0) -> None:
    """Wait until a worker has started its loop (its log says so): a scenario's clock starts
    with every worker claiming, not with their imports."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        proc.check()
        with contextlib.suppress(OSError):
            if '"worker started"' in proc.log.read_text(errors="replace"):
                return
        await asyncio.sleep(0.1)
    raise BenchError(f"{proc.name} did not start within {within_s:g} s; log {proc.log}")


def problem_code(r: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(r.json().get("code"))
    return "?"


async def at_rate(n: int, rate: float, call: Callable[[int], Awaitable[None]]) -> None:
    """call(0..n-1) started at a steady rate (each in a task of its own), all awaited."""
    start = time.monotonic()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(i)))
    await asyncio.gather(*tasks)


# --- judging a scenario -------------------------------------------------------------------------
def created_requests(entries: list[dict[str, Any]]) -> Counter[str]:
    """Requests fal created, per job (the `foley.job` tag); a submit that met an ingress
    error or was refused created none."""
    return Counter(
        e["tags"]["foley.job"]
        for e in entries
        if fal.request_kind(e) == "submit" and e.get("tags") and "foley.job" in e["tags"]
    )


def reconcile(env: dict[str, str], since: datetime) -> tuple[int, dict[str, Any]]:
    """`foley usage reconcile --json --from <since>`: its exit code and its report."""
    cmd = [PY, "-m", "app.entrypoints", "usage", "reconcile", "--json", "--from", since.isoformat()]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {"error": (done.stderr or done.stdout).strip()[-500:]}
    return done.returncode, report


async def judge(
    cl: Cluster, out: Outcome, accepted: list[str], since: float, settle_s: float
) -> None:
    """Wait for the accepted jobs to end (at most `settle_s`), then the common figures (the
    money apart: `check_money`, over a fresh cluster's whole life)."""
    db = cl.database
    ids = [uuid.UUID(a) for a in accepted]
    out.accepted = len(ids)
    await asyncio.to_thread(wait_finished, db, ids, settle_s)
    rows = await sql(
        db,
        "SELECT id::text AS id, status::text AS status, error->>'code' AS code "
        "FROM jobs WHERE id = ANY($1)",
        ids,
    )
    found = {r["id"]: r for r in rows}
    out.statuses = Counter(r["status"] for r in rows)
    out.failed_by_code = Counter(r["code"] or "?" for r in rows if r["status"] == "failed")
    out.lost = [a for a in accepted if a not in found or found[a]["status"] not in TERMINAL]
    per_job = created_requests(await cl.requests_since(since))
    out.requests_per_job = Counter(per_job.get(a, 0) for a in accepted)
    out.double_submits = [a for a in accepted if per_job.get(a, 0) > 1]
    out.ambiguous_unreceived = [
        r["id"] for r in rows if r["code"] == AMBIGUOUS and per_job.get(r["id"], 0) == 0
    ]
    out.require(not out.lost, "0 lost")
    out.require(not out.double_submits, "0 jobs with two upstream requests")
    out.require(not out.ambiguous_unreceived, "no job failed as ambiguous that fal never received")


async def check_money(cl: Cluster, out: Outcome) -> None:
    """`foley usage reconcile` over everything since the cluster opened (its database and the
    emulator's bill are that long)."""
    out.reconcile_exit, out.reconcile = await asyncio.to_thread(reconcile, cl.env, cl.opened_at)
    out.require(out.reconcile_exit == 0, "reconcile exit 0 (ledger = the emulator's bill)")


def window_start() -> datetime:
    # a minute of margin: the ledger's rows are stamped by Postgres, fal's by the emulator
    return datetime.now(UTC) - timedelta(minutes=1)


# --- 1. workers killed mid-step -----------------------------------------------------------------
@dataclass
class Kill:
    at: float  # time.time()
    owner: str  # the victim's lease owner
    jobs: list[tuple[str, str, str]]  # the victim's leased jobs: id, status, submit_state
    recovery_s: float | None = None  # None: not judged (no backlog left to dispatch)
    takeover_s: float = float("inf")  # until no live job is leased by the victim any more
    # The same for the queued jobs it held once dead (claimed to dispatch, never sent: each
    # held a slot of fal's account while leased); None when it held none (the step it was in
    # had written 'sending' or got past its submit before the kill landed).
    queued_takeover_s: float | None = None


async def taken_over(db: Database, kill: Kill, within_s: float = 180.0) -> None:
    """Measure how long the dead worker's leases keep its jobs from everyone else."""
    conn = await connect(db)
    try:
        queued: set[str] | None = None
        while time.time() - kill.at < within_s:
            held = await conn.fetch(
                "SELECT id::text AS id, status::text AS status, submit_state::text AS state "
                "FROM jobs WHERE lease_owner = $1 "
                "AND status IN ('queued', 'starting', 'processing')",
                kill.owner,
            )
            if queued is None:
                # Claimed to dispatch and never sent. A job left 'sending' may be at fal: it
                # holds its slot, as it should, until its lease ends and fal is asked about it.
                queued = {
                    r["id"] for r in held if r["status"] == "queued" and r["state"] == "pending"
                }
                kill.queued_takeover_s = float("inf") if queued else None
            now = time.time() - kill.at
            if queued and not queued & {r["id"] for r in held}:
                kill.queued_takeover_s, queued = now, set()
            if not held:
                kill.takeover_s = now
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def owner_pid(owner: str) -> int | None:
    # a worker's lease owner is "<host>:<pid>:<random>" (app.worker.runner.worker_id)
    parts = owner.split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


async def kill_a_lease_holder(
    cl: Cluster, conn: Any, rng: random.Random, *, dispatching: bool = False
) -> Kill:
    """Wait until one of the workers holds a lease (a step under way; with `dispatching`, on
    a queued job: a dispatch under way), SIGKILL it and start a replacement at once (three
    workers stay)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await conn.fetch(
            "SELECT id::text AS id, status::text AS status, submit_state::text AS state, "
            "lease_owner FROM jobs WHERE lease_expires_at > statement_timestamp()"
        )
        alive = {w.pid: w for w in cl.workers if w.alive()}
        holders: dict[str, list[tuple[str, str, str]]] = {}
        for r in rows:
            if owner_pid(r["lease_owner"]) in alive:
                holders.setdefault(r["lease_owner"], []).append((r["id"], r["status"], r["state"]))
        if dispatching:
            holders = {o: j for o, j in holders.items() if any(s == "queued" for _, s, _ in j)}
        if holders:
            owner = rng.choice(sorted(holders))
            at = time.time()
            cl.kill_worker(alive[owner_pid(owner)])  # type: ignore[index]
            cl.add_worker()
            return Kill(at, owner, holders[owner])
        await asyncio.sleep(0.005)
    raise BenchError("no worker held a lease for 60 s")


def dispatch_times(entries: list[dict[str, Any]]) -> list[float]:
    """When fal received each submit that created a request (the emulator's clock)."""
    return sorted(
        fal.logged_at(e)
        for e in entries
        if fal.request_kind(e) == "submit" and e.get("tags") is not None
    )


def recovery_after(at: float, times: list[float], normal: float, window: float = 2.0) -> float:
    """Seconds from `at` until dispatch runs at 60 % of its normal rate or more over a
    `window` (inf when it never does)."""
    need = 0.6 * normal * window
    d = 0.0
    while at + d + window <= times[-1]:
        n = sum(1 for t in times if at + d <= t < at + d + window)
        if n >= need:
            return d
        d += 0.1
    return float("inf")


async def workers_killed(cl: Cluster, sizes: Sizes, seed: int = 0) -> Outcome:
    """Jobs enough for a backlog at fal's 10 slots; after a baseline, `kills` workers
    SIGKILLed, each while it holds a lease, `kill_every_s` apart (each replaced at once)."""
    out = Outcome("workers killed")
    since = time.time()
    await cl.knobs(sizes, run_time=sizes.kill_run_time)
    accepted: list[str] = []
    creating = asyncio.create_task(cl.create_at_rate(sizes.jobs, sizes.kill_create_rate, accepted))
    rng = random.Random(seed)
    kills: list[Kill] = []
    conn = await connect(cl.database)
    try:
        first = time.time()
        await asyncio.sleep(sizes.baseline_s)  # the normal rate, measured below
        watching = []
        for _ in range(sizes.kills):
            kills.append(
                await kill_a_lease_holder(cl, conn, rng, dispatching=sizes.kill_dispatching)
            )
            watching.append(asyncio.create_task(taken_over(cl.database, kills[-1])))
            await asyncio.sleep(sizes.kill_every_s)
        await asyncio.gather(*watching)
    finally:
        await conn.close()
    answers = await creating
    await judge(cl, out, accepted, since, sizes.settle_s)
    times = dispatch_times(await cl.requests_since(since))
    # normal rate: from 2 s after the first dispatch (workers warm) to the first kill
    base_from = (times[0] if times else first) + 2.0
    base_to = kills[0].at if kills else first + sizes.baseline_s
    normal = sum(1 for t in times if base_from <= t < base_to) / max(0.1, base_to - base_from)
    for k in kills:
        # judged while queued jobs remained to dispatch (the last dispatch ends the backlog)
        if times and k.at + 2.0 <= times[-1]:
            k.recovery_s = recovery_after(k.at, times, normal)
    judged = [k.recovery_s for k in kills if k.recovery_s is not None and normal > 0]
    slow = [r for r in judged if r > sizes.recovery_s]
    out.figures |= {
        "answers": dict(answers),
        "kills": len(kills),
        "kills holding a lease": sum(1 for k in kills if k.jobs),
        "kills during a submit ('sending')": sum(
            1 for k in kills if any(s == "sending" for _, _, s in k.jobs)
        ),
        "the victims' leased jobs (status/submit state)": fmt_counts(
            Counter(f"{status}/{state}" for k in kills for _, status, state in k.jobs)
        ),
        "normal dispatch rate": f"{normal:.2f} jobs/s",
        "recovery after a kill (judged kills)": recovery_summary(judged),
        "dead worker's jobs taken over after": recovery_summary([k.takeover_s for k in kills]),
        "its queued jobs (slots held) taken over after": recovery_summary(
            [k.queued_takeover_s for k in kills if k.queued_takeover_s is not None]
        ),
        f"kills not recovered within {sizes.recovery_s:g} s": f"{len(slow)} of {len(judged)}",
    }
    out.figures["_kills"] = kills
    out.require(
        bool(judged) and not slow,
        f"dispatch back to its normal rate within {sizes.recovery_s:g} s of a worker kill",
    )
    return out


def recovery_summary(values: list[float]) -> str:
    if not values:
        return "none judged"
    v = sorted(values)
    shown = [f"{x:.1f}" if x != float("inf") else "never" for x in (v[len(v) // 2], v[-1])]
    return f"median {shown[0]} s, max {shown[1]} s ({len(v)} kills)"


# --- 2. Postgres stopped and started ------------------------------------------------------------
@dataclass
class Answer:
    at: float
    kind: str  # create, list, get
    status: int | None  # None: no answer (connection failed)
    retry_after: bool
    problem: bool


async def database_outage(cl: Cluster, sizes: Sizes) -> Outcome:
    """Creates at `rate`/s (and reads of the list and of jobs at 2/s each) while Postgres is
    stopped for `outage_s` and started again; fal's webhooks keep arriving throughout."""
    out = Outcome("Postgres outage")
    since = time.time()
    await cl.knobs(sizes)
    accepted: list[str] = []
    answers: list[Answer] = []

    async def call(kind: str, method: str, url: str, **kw: Any) -> httpx.Response | None:
        try:
            r = await cl.http.request(method, url, **kw)
        except httpx.HTTPError:
            answers.append(Answer(time.time(), kind, None, False, False))
            return None
        ctype = r.headers.get("content-type", "")
        ra = r.headers.get("retry-after", "")
        answers.append(
            Answer(
                time.time(),
                kind,
                r.status_code,
                ra.isdigit() and int(ra) > 0,
                ctype.startswith("application/problem+json"),
            )
        )
        return r

    async def create(i: int) -> None:
        body = job_body(i, cl.video_url, cl.name)
        r = await call("create", "POST", "/v1/jobs", json=body)
        if r is not None and r.status_code == 202:
            accepted.append(r.json()["id"])

    async def read(i: int) -> None:
        if i % 2:
            await call("list", "GET", "/v1/jobs")
        elif accepted:
            await call("get", "GET", f"/v1/jobs/{accepted[i % len(accepted)]}")

    total = sizes.outage_before_s + sizes.outage_s + sizes.outage_after_s
    n = int(total * sizes.rate)
    load = asyncio.gather(at_rate(n, sizes.rate, create), at_rate(int(total * 4), 4.0, read))
    await asyncio.sleep(sizes.outage_before_s)
    stopped = time.time()
    await asyncio.to_thread(cl.pg.stop)
    await asyncio.sleep(sizes.outage_s)
    await asyncio.to_thread(cl.pg.start)
    started = time.time()
    await load
    await judge(cl, out, accepted, since, sizes.settle_s)
    during = [a for a in answers if stopped <= a.at <= started + 1.0]
    by_status = Counter(a.status for a in answers)
    webhooks = [
        w
        for w in await asyncio.to_thread(cl.emu.webhooks)
        if datetime.fromisoformat(w["at"]).timestamp() >= since
    ]
    hooks_during = Counter(
        w.get("status_code")
        for w in webhooks
        if stopped <= datetime.fromisoformat(w["at"]).timestamp() <= started + 1.0
    )
    hook_500s = sum(1 for w in webhooks if w.get("status_code") == 500)
    bad_503 = [a for a in answers if a.status == 503 and not (a.retry_after and a.problem)]
    entries = await cl.requests_since(since)
    after = [t for t in dispatch_times(entries) if t > started]
    first_202 = min(
        (a.at for a in answers if a.kind == "create" and a.status == 202 and a.at > started),
        default=None,
    )
    listen = [listen_back(w, stopped) for w in cl.workers]
    out.figures |= {
        "outage": f"{started - stopped:.1f} s",
        "answers during the outage": fmt_counts(Counter(a.status for a in during)),
        "answers in the whole scenario": fmt_counts(by_status),
        "500 answers (whole scenario)": by_status.get(500, 0),
        "503 without Retry-After or problem+json": len(bad_503),
        "fal webhooks during the outage, by answer": fmt_counts(hooks_during),
        "fal webhooks answered 500 (whole scenario)": hook_500s,
        "first 202 after the restart": seconds_after(first_202, started),
        "first dispatch after the restart": seconds_after(after[0] if after else None, started),
        "workers' LISTEN back after the restart": ", ".join(
            seconds_after(t, started) for t in listen
        ),
    }
    out.require(
        by_status.get(500, 0) == 0 and hook_500s == 0 and not bad_503 and 503 in by_status,
        "0 × 500 during a Postgres outage (503 with Retry-After instead)",
    )
    return out


def listen_back(worker: Proc, since: float) -> float | None:
    """When the worker's log says its LISTEN connection came back, after `since`."""
    with contextlib.suppress(OSError):
        for line in worker.log.read_text(errors="replace").splitlines():
            if '"LISTEN connection back"' not in line:
                continue
            with contextlib.suppress(ValueError, KeyError):
                at = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
                if at >= since:
                    return at
    return None


def fmt_counts(c: Counter[Any]) -> str:
    return (
        ", ".join(
            f"{k if k is not None else 'no answer'}: {v}"
            for k, v in sorted(c.items(), key=lambda kv: str(kv[0]))
        )
        or "none"
    )


def seconds_after(t: float | None, origin: float) -> str:
    return "never" if t is None else f"{t - origin:.2f} s"


# --- 3. mixed upstream faults -------------------------------------------------------------------
async def upstream_faults(cl: Cluster, sizes: Sizes) -> Outcome:
    """`jobs` jobs at `rate`/s with ~30 % of them meeting one of the emulator's faults."""
    out = Outcome("30 % upstream faults")
    since = time.time()
    await cl.knobs(sizes, **MIXED_FAULTS)
    accepted: list[str] = []
    answers = await cl.create_at_rate(sizes.jobs, sizes.rate, accepted)
    await judge(cl, out, accepted, since, sizes.settle_s)
    entries = await cl.requests_since(since)
    submits = [e for e in entries if fal.request_kind(e) == "submit"]
    hooks = Counter(
        "bad signature"
        if w.get("bad_signature")
        else "duplicate"
        if w.get("duplicate")
        else "reordered"
        if w.get("reordered")
        else w.get("outcome") or "?"
        for w in await asyncio.to_thread(cl.emu.webhooks)
        if datetime.fromisoformat(w["at"]).timestamp() >= since
    )
    out.figures |= {
        "answers": dict(answers),
        "submits at fal, by outcome": fmt_counts(
            Counter(e.get("outcome") or str(e.get("status")) for e in submits)
        ),
        "webhook attempts": fmt_counts(hooks),
    }
    return out


# --- 4. the API killed with creates in flight -----------------------------------------------------
async def api_killed(cl: Cluster, sizes: Sizes) -> Outcome:
    """`api_rounds` times: `in_flight` creates at once, each with an Idempotency-Key; the API
    SIGKILLed as the first answer arrives; restarted; every create without an answer retried
    with its key until it gets one."""
    out = Outcome("API killed")
    since = time.time()
    await cl.knobs(sizes)
    accepted: list[str] = []
    keys: dict[str, str] = {}  # key -> the job id its answer named
    in_flight, waits, conflicts, unanswered = [], [], 0, []
    for rnd in range(sizes.api_rounds):
        batch = {
            f"chaos-{rnd}-{i}-{uuid.uuid4().hex[:8]}": rnd * sizes.in_flight + i
            for i in range(sizes.in_flight)
        }
        tasks = {
            asyncio.create_task(cl.create(i, key=key, idem=key)): key for key, i in batch.items()
        }
        await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        cl.kill_api()
        await asyncio.gather(*tasks)
        retry: list[str] = []
        for task, key in tasks.items():
            r = task.result()
            if r is not None and r.status_code == 202:
                keys[key] = r.json()["id"]
            else:
                retry.append(key)
        in_flight.append(len(retry))
        await asyncio.to_thread(cl.running_api.start)
        ready = time.monotonic()

        async def until_answered(key: str, i: int, ready: float) -> None:
            nonlocal conflicts
            deadline = ready + sizes.retry_deadline_s
            while time.monotonic() < deadline:
                r = await cl.create(i, key=key, idem=key)
                if r is not None and r.status_code == 202:
                    keys[key] = r.json()["id"]
                    waits.append(time.monotonic() - ready)
                    return
                if r is not None and r.status_code == 409:
                    conflicts += 1
                await asyncio.sleep(0.2)  # the client's back-off between retries
            unanswered.append(key)

        await asyncio.gather(*(until_answered(k, batch[k], ready) for k in retry))
    accepted = list(dict.fromkeys(keys.values()))
    await judge(cl, out, accepted, since, sizes.settle_s)
    rows = await sql(
        cl.database,
        "SELECT metadata->>'idem' AS key, array_agg(id::text) AS ids FROM jobs "
        "WHERE metadata ? 'idem' GROUP BY 1",
    )
    jobs_of = {r["key"]: r["ids"] for r in rows}
    two = [k for k, ids in jobs_of.items() if len(ids) > 1]
    wrong = [k for k, job in keys.items() if jobs_of.get(k) != [job]]
    w = sorted(waits)
    out.figures |= {
        "creates in flight at each kill": ", ".join(map(str, in_flight)),
        "retries answered after the restart": (
            f"median {w[len(w) // 2]:.1f} s, max {w[-1]:.1f} s ({len(w)})" if w else "none"
        ),
        "409 idempotency_request_in_progress answers": conflicts,
        "keys never answered": len(unanswered),
        "keys with two jobs": len(two),
        "keys whose answer names another job": len(wrong),
    }
    out.require(not two and not wrong and not unanswered, "one job per Idempotency-Key")
    return out


SCENARIOS: dict[str, Callable[[Cluster, Sizes], Awaitable[Outcome]]] = {
    "kills": workers_killed,
    "outage": database_outage,
    "faults": upstream_faults,
    "api": api_killed,
}


async def run_alone(cl: Cluster, name: str, sizes: Sizes) -> Outcome:
    """One scenario on a cluster of its own (`make chaos`): its reconcile covers it alone."""
    try:
        await cl.open(name, sizes)
        out = await SCENARIOS[name](cl, sizes)
        await check_money(cl, out)
        return out
    finally:
        await cl.close()
