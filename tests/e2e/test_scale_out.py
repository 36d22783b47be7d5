"""Scale-out, end to end: two `foley api` and three `foley worker` processes on one database, the
fal emulator over HTTP, a client sending each request to the next API in turn. What must hold
across processes is asserted from the database and from the emulator's own record of what it
received: one request at fal per job, fair share across tenants whichever worker claims, one job
per Idempotency-Key whichever API answers, one rate limit per tenant across the APIs, and a
job's event stream whole from the API that did not accept it.

The fair-share batch is queued before any worker starts (the `batch` fixture), so the workers
meet a backlog of three tenants at once; the other tests run against the same processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import fal as harness_fal
from harness import scale
from harness.database import Database, connect
from harness.gateway import Tenant
from harness.procs import Procs

from app.jobs.store import DISPATCH_LOCK
from tests.conftest import RUN_ID
from tests.support.clips import make_bouncing_square
from tests.support.database import create_database, drop_database
from tests.support.waiting import eventually

APIS, WORKERS = 2, 3
SLOTS = 6  # the fal account's concurrency: the emulator's and the gateway's
STEPS = 2  # steps a worker runs at once
TENANTS = 3
JOBS_PER_TENANT = 8
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


@pytest.fixture(scope="module")
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.stop_all()


@pytest.fixture(scope="module")
async def scale_db(pg_server: str) -> AsyncIterator[Database]:
    name = f"foley_scale_{RUN_ID}"
    url = await create_database(pg_server, name)
    yield Database(server_url=pg_server, url=url, name=name, pg_root=None)
    await drop_database(pg_server, name)


@pytest.fixture(scope="module")
async def cluster(
    procs: Procs, scale_db: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[scale.Cluster]:
    tmp = tmp_path_factory.mktemp("scale")
    emu = harness_fal.start_emulator(procs, tmp / "emulator", fast=True, concurrency=SLOTS)
    emu.control(run_time="0.5..0.8")
    cl = scale.Cluster(
        procs,
        tmp,
        scale_db,
        emu,
        apis=APIS,
        settings={
            "FOLEY_FAL_CONCURRENCY": str(SLOTS),
            # Two steps at once per worker: no worker can dispatch the account's 6 slots alone,
            # so the workers share the dispatching and fair share is decided across them.
            "FOLEY_WORKER_CONCURRENCY": str(STEPS),
            "FOLEY_WORKER_POLL_INTERVAL": "0.5",
        },
    )
    clip = make_bouncing_square(tmp / "clip.mp4", duration_s=4.0, width=160, height=120)
    cl.video_url = emu.upload(clip.path, "video/mp4")
    await cl.start_apis()
    yield cl
    await cl.stop()


def body(cl: scale.Cluster, i: int) -> dict[str, Any]:
    return {
        "model": "thinksound-audio",
        "input": {"video_url": cl.video_url, "seed": i},
    }


async def finished(cl: scale.Cluster, ids: list[str], timeout: float = 90) -> dict[str, str]:
    """Wait until every job has ended; their statuses."""

    async def all_ended() -> dict[str, str] | None:
        rows = await scale_sql(
            cl, "SELECT id::text AS id, status::text AS s FROM jobs WHERE id = ANY($1::uuid[])", ids
        )
        statuses = {r["id"]: r["s"] for r in rows}
        return (
            statuses if set(statuses.values()) <= TERMINAL and len(statuses) == len(ids) else None
        )

    return await eventually(all_ended, timeout=timeout, interval=0.2, what="every job to end")


async def scale_sql(cl: scale.Cluster, statement: str, *args: Any) -> list[Any]:
    from harness.database import sql

    return await sql(cl.db, statement, *args)


async def claims_waiting(cluster: scale.Cluster) -> bool:
    rows = await scale_sql(
        cluster,
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted "
        "AND l.objid = $1",
        DISPATCH_LOCK,
    )
    return bool(rows[0]["n"] >= WORKERS)


@dataclass
class Batch:
    tenants: list[Tenant]
    jobs: dict[str, list[str]]  # tenant id -> its jobs, in creation order
    statuses: dict[str, str]
    requests: list[scale.Request]
    sent_by: dict[str, list[str]]  # worker (its log) -> the fal request ids it submitted


@pytest.fixture(scope="module")
async def batch(cluster: scale.Cluster) -> AsyncIterator[Batch]:
    """Three tenants of equal weight queue 8 jobs each, through both APIs in turn, the first
    tenant's all before the others'; then the workers start and run them all."""
    tenants = [cluster.new_tenant(f"fair-{i}") for i in range(TENANTS)]
    jobs: dict[str, list[str]] = {}
    for n, tenant in enumerate(tenants):
        async with cluster.client(tenant) as rr:
            ids = []
            for i in range(JOBS_PER_TENANT):
                r = await rr.next().post("/v1/jobs", json=body(cluster, n * 100 + i))
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            jobs[tenant.id] = ids
    # The dispatch claim's lock is held while the workers start, so none dispatches before all
    # three are claiming (a worker up a few seconds before the others would run the whole batch
    # alone): the backlog meets the three at once.
    hold = await connect(cluster.db)
    try:
        await hold.execute("SELECT pg_advisory_lock($1)", DISPATCH_LOCK)
        await cluster.start_workers(WORKERS)
        await eventually(
            lambda: claims_waiting(cluster), timeout=60, what="every worker's dispatch claim"
        )
    finally:
        await hold.close()  # the lock goes with the session
    statuses = await finished(cluster, [j for ids in jobs.values() for j in ids])
    requests = await asyncio.to_thread(scale.fal_requests, cluster.emu)
    yield Batch(tenants, jobs, statuses, requests, scale.submitted_by_worker(cluster.workers))


def test_every_job_succeeds_with_exactly_one_request_at_fal(batch: Batch) -> None:
    all_jobs = [j for ids in batch.jobs.values() for j in ids]
    assert Counter(batch.statuses.values()) == {"succeeded": len(all_jobs)}
    per_job = Counter(r.job for r in batch.requests)
    assert {j: per_job[j] for j in all_jobs} == dict.fromkeys(all_jobs, 1)
    assert len({r.request_id for r in batch.requests}) == len(batch.requests)


async def test_each_job_was_sent_once_by_one_lease_holder(
    cluster: scale.Cluster, batch: Batch
) -> None:
    # The database's own history: one `job.submitting` per job (the mark written, under the
    # lease, before the request leaves), no ambiguous submit, and the request fal created is
    # the one the job records.
    all_jobs = [j for ids in batch.jobs.values() for j in ids]
    rows = await scale_sql(
        cluster,
        "SELECT j.id::text AS id, j.upstream_request_id AS rid, "
        "count(*) FILTER (WHERE e.type = 'job.submitting') AS submitting, "
        "count(*) FILTER (WHERE e.type = 'job.submit_ambiguous') AS ambiguous, "
        "j.submit_attempts AS attempts "
        "FROM jobs j JOIN job_events e ON e.job_id = j.id WHERE j.id = ANY($1::uuid[]) "
        "GROUP BY j.id",
        all_jobs,
    )
    assert {
        r["id"]: (r["submitting"], r["ambiguous"], r["attempts"]) for r in rows
    } == dict.fromkeys(all_jobs, (1, 0, 1))
    fal_ids = {r.job: r.request_id for r in batch.requests}
    assert {r["id"]: r["rid"] for r in rows} == {j: fal_ids[j] for j in all_jobs}


def test_the_requests_were_sent_by_several_workers_each_by_one(batch: Batch) -> None:
    # Each worker's own log of what it submitted: every request fal created was sent by one
    # worker, and every worker sent some (so fair share below held across workers).
    sent = [rid for ids in batch.sent_by.values() for rid in ids]
    assert sorted(sent) == sorted(r.request_id for r in batch.requests)
    counts = {name: len(ids) for name, ids in batch.sent_by.items()}
    assert len(counts) == WORKERS and all(counts.values()), counts


def test_fair_share_holds_across_workers(batch: Batch) -> None:
    tenant_ids = [t.id for t in batch.tenants]
    # The first tenant queued all its jobs before the others queued any: first come, first
    # served would have sent its jobs first, filling every slot of the account.
    first = sorted(batch.requests, key=lambda r: r.submitted_at)[:SLOTS]
    assert {r.tenant for r in first} == set(tenant_ids), Counter(r.tenant for r in first)
    # While all three waited, no tenant held more than its share of the account's slots. The
    # share is ceil(C / T); one more is allowed because a tenant stops waiting when its last
    # job is claimed, a moment before that job reaches fal (preflight runs in between), and in
    # that moment the others may take the slots it frees.
    share = math.ceil(SLOTS / TENANTS)
    peaks = scale.peak_in_flight_while_all_waiting(batch.requests, tenant_ids)
    assert max(peaks.values()) <= share + 1, peaks
    assert max(peaks.values()) < SLOTS, peaks


async def test_one_idempotency_key_is_one_job_across_apis(
    cluster: scale.Cluster, batch: Batch
) -> None:
    tenant = cluster.new_tenant("idempotent")
    key = f"order-{uuid.uuid4()}"
    async with cluster.client(tenant) as rr:
        first = await rr.at(0).post(
            "/v1/jobs", json=body(cluster, 1), headers={"Idempotency-Key": key}
        )
        again = await rr.at(1).post(
            "/v1/jobs", json=body(cluster, 1), headers={"Idempotency-Key": key}
        )
        other = await rr.at(1).post(
            "/v1/jobs", json=body(cluster, 2), headers={"Idempotency-Key": key}
        )
    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    # the same key with another body is refused by the other API too
    assert other.status_code == 422, other.text
    assert other.json()["code"] == "idempotency_key_reused"
    rows = await scale_sql(
        cluster, "SELECT id::text AS id FROM jobs WHERE tenant_id = $1", uuid.UUID(tenant.id)
    )
    assert [r["id"] for r in rows] == [first.json()["id"]]
    await finished(cluster, [first.json()["id"]])
    requests = await asyncio.to_thread(scale.fal_requests, cluster.emu)
    assert [r.job for r in requests if r.tenant == tenant.id] == [first.json()["id"]]


async def test_the_rate_limit_holds_across_apis(cluster: scale.Cluster, batch: Batch) -> None:
    limit = 5
    tenant = cluster.new_tenant("limited", rate_limit_per_minute=limit)
    async with cluster.client(tenant) as rr:
        answers = [
            await rr.next().post("/v1/jobs", json=body(cluster, i)) for i in range(2 * limit)
        ]
    codes = [r.status_code for r in answers]
    # Alternating APIs: a limit kept per process would admit `limit` on each.
    assert codes == [202] * limit + [429] * limit, codes
    refused = answers[limit:]
    assert {r.json()["code"] for r in refused} == {"rate_limited"}
    assert all(int(r.headers["Retry-After"]) > 0 for r in refused)
    assert answers[-1].headers["RateLimit"].startswith('"jobs";r=0;')
    rows = await scale_sql(
        cluster, "SELECT count(*) AS n FROM jobs WHERE tenant_id = $1", uuid.UUID(tenant.id)
    )
    assert rows[0]["n"] == limit
    await finished(cluster, [r.json()["id"] for r in answers[:limit]])


async def read_stream(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """The job's event stream, read to its end: each message's id, event and data."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if not line:
                if current:
                    messages.append(current)
                    current = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    if current:
        messages.append(current)
    return messages


async def test_a_jobs_stream_is_whole_from_the_api_that_did_not_accept_it(
    cluster: scale.Cluster, batch: Batch
) -> None:
    tenant = cluster.new_tenant("streams")
    async with cluster.client(tenant) as rr:
        created = await rr.at(0).post("/v1/jobs", json=body(cluster, 7))
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        # Followed live from the other API, from the job's first event to its last.
        messages = await read_stream(rr.at(1), job_id)
        listed = (await rr.at(0).get(f"/v1/jobs/{job_id}/events")).json()["data"]
    seqs = [int(m["id"]) for m in messages]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert [m["event"] for m in messages] == [e["type"] for e in listed]
    assert [json.loads(m["data"]) for m in messages] == listed
    assert messages[0]["event"] == "job.created"
    assert messages[-1]["event"] == "job.succeeded"
