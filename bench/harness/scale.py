"""Scale-out: several `foley api` and `foley worker` processes on one database, the fal emulator
as fal, and a client that sends each request to the next API in turn (what a round-robin load
balancer does). `bench/scale_out_bench.py` measures it; `tests/e2e/test_scale_out.py` asserts
what must hold across processes (one request at fal per job, fair share, idempotency and rate
limits, event streams from any API).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from harness.chaos import worker_ready
from harness.database import Database
from harness.gateway import Api, Tenant, gateway_env, start_worker
from harness.procs import BenchError, Proc, Procs


class Cluster:
    """`apis` × `foley api` and any number of `foley worker` on `db`, the emulator as fal.
    fal's webhooks go to the first API (fal has one webhook URL per request; any API verifies
    and stores it). Every process gets the same settings: `settings` on top of the defaults."""

    def __init__(
        self,
        procs: Procs,
        out_dir: Path,
        db: Database,
        emu: Any,
        *,
        apis: int = 2,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.procs, self.out_dir, self.db, self.emu = procs, out_dir, db, emu
        env = gateway_env(
            db,
            out_dir / "data",
            emu,
            FOLEY_FAL_PLATFORM_URL=f"{emu.base_url}/v1",
            FOLEY_FAL_ADMIN_KEY=emu.admin_key,
            FOLEY_LOG_FORMAT="json",
            **(settings or {}),
        )
        self.apis = [Api(procs, env, out_dir, cli=True, name=f"api-{i}") for i in range(apis)]
        for api in self.apis:
            api.env["FOLEY_PUBLIC_URL"] = self.apis[0].base
        self.env = self.apis[0].env
        self.workers: list[Proc] = []
        self._spawned = 0
        self.video_url = ""  # an input the jobs of a run use (the caller's upload)

    async def start_apis(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(api.start) for api in self.apis))

    async def start_workers(self, n: int) -> list[Proc]:
        """n more workers, returned once each has started its loop."""
        started = []
        for _ in range(n):
            self._spawned += 1
            log = self.out_dir / f"worker-{self._spawned}.log"
            started.append(start_worker(self.procs, self.env, log))
        await asyncio.gather(*(worker_ready(w) for w in started))
        self.workers.extend(started)
        return started

    async def stop_workers(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(self.procs.stop, w) for w in self.workers))
        self.workers.clear()

    async def stop(self) -> None:
        await self.stop_workers()
        await asyncio.gather(*(asyncio.to_thread(api.stop) for api in self.apis))

    def new_tenant(self, name: str, **patch: Any) -> Tenant:
        return self.apis[0].new_tenant(name, **patch)

    def client(self, tenant: Tenant) -> RoundRobin:
        return RoundRobin([api.base for api in self.apis], tenant.auth)

    def pids(self) -> dict[str, list[int]]:
        return {
            "api": [api.pid for api in self.apis],
            "worker": [w.pid for w in self.workers],
        }


class RoundRobin:
    """One HTTP client per API; each request goes to the next one. `at(i)` is the i-th API's
    client, for a request that must reach a given process."""

    def __init__(self, bases: list[str], headers: dict[str, str]) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
        self.clients = [
            httpx.AsyncClient(base_url=b, headers=headers, timeout=30, limits=limits) for b in bases
        ]
        self._turn = itertools.cycle(range(len(bases)))

    def next(self) -> httpx.AsyncClient:
        return self.clients[next(self._turn)]

    def at(self, i: int) -> httpx.AsyncClient:
        return self.clients[i]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))

    async def __aenter__(self) -> RoundRobin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --- what fal saw -------------------------------------------------------------------------------
@dataclass
class Request:
    """One request created at the emulator: whose, and when it held a slot of the account."""

    request_id: str
    job: str
    tenant: str
    submitted_at: float
    completed_at: float | None


def _ts(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def fal_requests(emu: Any) -> list[Request]:
    """Every request the emulator created from a gateway's submit (tagged `foley.job` and
    `foley.tenant`), with its submit and completion times on the emulator's clock."""
    out = []
    for entry in emu.submits():
        tags = entry.get("tags") or {}
        if not entry.get("request_id") or "foley.job" not in tags:
            continue
        job = emu.job(entry["request_id"])
        out.append(
            Request(
                request_id=entry["request_id"],
                job=tags["foley.job"],
                tenant=tags.get("foley.tenant", ""),
                submitted_at=_ts(job["submitted_at"]) or 0.0,
                completed_at=_ts(job["completed_at"]),
            )
        )
    return out


def peak_in_flight_while_all_waiting(
    requests: Iterable[Request], tenants: Iterable[str]
) -> dict[str, int]:
    """Per tenant, the most requests it had at fal at once while every one of `tenants` still
    had a job not yet sent (until the first of them sent its last). Fair share bounds this: with
    equal weights, T tenants and an account of C slots, each tenant's turn is its requests in
    flight plus its place in its own queue, so none holds more than ceil(C / T) while all wait
    (first-come-first-served would give the tenant that queued first every slot)."""
    by_tenant: dict[str, list[Request]] = defaultdict(list)
    for r in requests:
        by_tenant[r.tenant].append(r)
    tenants = list(tenants)
    missing = [t for t in tenants if not by_tenant[t]]
    if missing:
        raise BenchError(f"no request at fal for tenants {missing}")
    until = min(max(r.submitted_at for r in by_tenant[t]) for t in tenants)
    peaks = {}
    for t in tenants:
        # Sweep the tenant's submits and completions up to `until`: a completion at the same
        # instant as a submit frees its slot first (fal finished it before the next claim).
        marks = []
        for r in by_tenant[t]:
            if r.submitted_at < until:
                marks.append((r.submitted_at, 1))
                if r.completed_at is not None:
                    marks.append((r.completed_at, -1))
        held = peak = 0
        for _, delta in sorted(marks, key=lambda m: (m[0], m[1])):
            held += delta
            peak = max(peak, held)
        peaks[t] = peak
    return peaks


def submitted_by_worker(workers: Iterable[Proc]) -> dict[str, list[str]]:
    """Per worker (its log's name), the fal request ids it logged as submitted
    (`upstream.submitted`, JSON logs): who sent what, in each worker's own words."""
    out: dict[str, list[str]] = {}
    for proc in workers:
        ids = []
        for line in proc.log.read_text(errors="replace").splitlines():
            if '"upstream.submitted"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "upstream.submitted":
                        ids.append(str(entry["fal_request_id"]))
        out[proc.log.name] = ids
    return out
