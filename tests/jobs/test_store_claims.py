"""The store's claims: the fal account's cap, each tenant's cap, weighted fair share."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.jobs import lifecycle, store
from app.jobs.store import JobStore
from app.models import Job, JobStatus, SubmitState, WorkerBeat
from tests.conftest import ADMIN, TenantCreds, make_tenant
from tests.support.driver import TransactionPool

KLING = {"model": "kling-video-to-audio", "input": {"video_url": "https://x.example/a.mp4"}}
LEASE = timedelta(seconds=60)
STALE = timedelta(seconds=5)  # a lease holder silent this long is dead


async def _queue(api: httpx.AsyncClient, tenant: TenantCreds, n: int) -> list[str]:
    return [
        (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()["id"]
        for _ in range(n)
    ]


async def _owner_tenants(sessionmaker: async_sessionmaker, ids: list[uuid.UUID]) -> list[str]:
    async with sessionmaker() as s:
        rows = (await s.execute(select(Job.id, Job.tenant_id).where(Job.id.in_(ids)))).all()
    by_id = {r[0]: str(r[1]) for r in rows}
    return [by_id[i] for i in ids]


async def _claim(
    driver_pool: TransactionPool,
    limit: int,
    cap: int = 1000,
    default_tenant_cap: int | None = None,
) -> list[uuid.UUID]:
    jobs = (
        await store.claim_dispatches(
            driver_pool, "w1", LEASE, limit, cap, default_tenant_cap, STALE
        )
    ).jobs
    return [j.id for j in jobs]


async def test_a_claim_says_whether_it_left_due_jobs_unsent(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    # What the worker needs to know whether a place freed at fal is worth claiming for.
    async def claim(limit: int, cap: int, owner: str = "w1") -> store.DispatchClaim:
        return await store.claim_dispatches(driver_pool, owner, LEASE, limit, cap, None, STALE)

    async def sent(jobs: list[Job]) -> None:
        async with sessionmaker() as s, s.begin():
            ids = [j.id for j in jobs]
            await s.execute(update(Job).where(Job.id.in_(ids)).values(submit_state="submitted"))

    nothing = await claim(5, 1000)
    assert (nothing.jobs, nothing.left_waiting) == ([], False)  # nothing queued
    await _queue(api, tenant, 3)
    held = await claim(5, 0)
    assert (held.jobs, held.left_waiting) == ([], True)  # no place at fal: all three wait
    some = await claim(2, 1000)
    assert (len(some.jobs), some.left_waiting) == (2, True)  # past the claim's limit
    rest = await claim(5, 1000, owner="w2")
    # took the last one; the first two are claimed and not sent yet: due again if w1 dies
    assert (len(rest.jobs), rest.left_waiting) == (1, True)
    await sent(some.jobs + rest.jobs)
    assert (await claim(5, 1000)).left_waiting is False  # every job sent


async def test_a_claim_answers_the_rows_it_claimed(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    (job_id,) = await _queue(api, tenant, 1)
    (job,) = (await store.claim_dispatches(driver_pool, "w1", LEASE, 5, 1000, None, STALE)).jobs
    # Typed like a loaded row (the step works from it without reading the job again).
    assert job.id == uuid.UUID(job_id)
    assert job.status is JobStatus.queued and job.submit_state is SubmitState.pending
    assert job.input["video_url"] == KLING["input"]["video_url"]
    assert job.lease_owner == "w1" and job.lease_expires_at is not None
    async with sessionmaker() as s:
        stored = await s.get(Job, job.id)
        assert stored is not None
        assert {c.key: getattr(stored, c.key) for c in Job.__mapper__.column_attrs} == {
            c.key: getattr(job, c.key) for c in Job.__mapper__.column_attrs
        }
    async with sessionmaker() as s, s.begin():
        await s.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                submit_state=SubmitState.submitted,
                status=JobStatus.starting,
                lease_owner=None,
                lease_expires_at=None,
                next_action_at=func.now(),
            )
        )
    (follow_up,) = await store.claim_follow_ups(driver_pool, "w2", LEASE, 5, STALE)
    assert follow_up.id == job.id and follow_up.lease_owner == "w2"
    assert follow_up.status is JobStatus.starting
    assert follow_up.submit_state is SubmitState.submitted


async def test_a_small_tenant_is_not_starved_by_a_flood(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    small = await make_tenant(api, "small")
    await _queue(api, tenant, 40)  # the flood, queued first
    (small_job,) = await _queue(api, small, 1)
    first = await _claim(driver_pool, limit=2)
    owners = await _owner_tenants(sessionmaker, first)
    assert small.id in owners, "the small tenant's job is among the first two claimed"
    assert uuid.UUID(small_job) in first


async def test_the_account_cap_bounds_every_claim(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    await _queue(api, tenant, 10)
    assert len(await _claim(driver_pool, limit=8, cap=3)) == 3
    # The three are now leased (in flight for the cap): nothing more fits.
    assert await _claim(driver_pool, limit=8, cap=3) == []


async def test_a_request_fal_completed_frees_its_slot_at_once(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    await _queue(api, tenant, 3)
    (first,) = await _claim(driver_pool, limit=8, cap=1)
    job_store = JobStore(sessionmaker, driver_pool, policy=lifecycle.Policy(), bill_422=False)
    await job_store.apply(first, lifecycle.SubmitStarting(), owner="w1")
    await job_store.apply(first, lifecycle.Submitted("req-1", "s", "r", "c", 0), owner="w1")
    assert await _claim(driver_pool, limit=8, cap=1) == []  # fal runs it: the one slot is taken
    # fal says it is complete (its status stream), before any worker has fetched the result
    await job_store.apply(first, lifecycle.UpstreamCompleted(1.5, None), owner=None)
    assert len(await _claim(driver_pool, limit=8, cap=1)) == 1


async def test_a_tenants_in_flight_cap(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    other = await make_tenant(api, "other")
    r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json={"max_in_flight": 2}, headers=ADMIN)
    assert r.status_code == 200
    await _queue(api, tenant, 6)
    await _queue(api, other, 6)
    claimed = await _claim(driver_pool, limit=10)
    counts = Counter(await _owner_tenants(sessionmaker, claimed))
    assert counts[tenant.id] == 2 and counts[other.id] == 6
    assert counts[tenant.id] + counts[other.id] == len(claimed)
    # The gateway-wide default applies to tenants without their own cap.
    third = await make_tenant(api, "third")
    await _queue(api, third, 5)
    claimed = await _claim(driver_pool, limit=10, default_tenant_cap=3)
    assert Counter(await _owner_tenants(sessionmaker, claimed)) == {third.id: 3}


async def test_weights_share_the_account(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    heavy = await make_tenant(api, "heavy")
    await api.patch(f"/v1/admin/tenants/{heavy.id}", json={"weight": 2}, headers=ADMIN)
    await _queue(api, tenant, 20)
    await _queue(api, heavy, 20)
    claimed = await _claim(driver_pool, limit=12)
    counts = Counter(await _owner_tenants(sessionmaker, claimed))
    assert counts == {heavy.id: 8, tenant.id: 4}


async def test_a_completed_job_of_a_worker_that_stopped_beating_is_taken_over_at_once(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    ids = [uuid.UUID(i) for i in await _queue(api, tenant, 4)]
    owners = {ids[0]: "dead", ids[1]: "dead", ids[2]: "busy", ids[3]: "never-beat"}
    job_store = JobStore(sessionmaker, driver_pool, policy=lifecycle.Policy(), bill_422=False)
    for job_id, owner in owners.items():
        async with sessionmaker() as s, s.begin():  # each job held by its owner, at fal
            await s.execute(
                update(Job).where(Job.id == job_id).values(lease_owner=owner, next_action_at=None)
            )
        await job_store.apply(job_id, lifecycle.SubmitStarting(), owner=owner)
        await job_store.apply(
            job_id, lifecycle.Submitted(f"req-{job_id}", "s", "r", "c", 0), owner=owner
        )
        async with sessionmaker() as s, s.begin():  # due, but its step holds the lease (60 s)
            await s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    lease_owner=owner,
                    lease_expires_at=func.now() + LEASE,
                    next_action_at=func.now(),
                )
            )
    for owner in ("dead", "busy"):
        await store.beat(driver_pool, owner)
    async with sessionmaker() as s, s.begin():  # "dead" last beat 10 s ago
        await s.execute(
            update(WorkerBeat)
            .where(WorkerBeat.owner == "dead")
            .values(beat_at=func.statement_timestamp() - timedelta(seconds=10))
        )
    # fal reported all but ids[1] complete (a webhook, a stream, a poll: whoever saw it).
    for job_id in (ids[0], ids[2], ids[3]):
        await job_store.apply(job_id, lifecycle.CompletionReported(), owner=None)
    stale = timedelta(seconds=5)
    claimed = await store.claim_follow_ups(driver_pool, "survivor", LEASE, 10, stale)
    # Only the completed job of the dead worker: the busy one beats, the running one may still
    # be submitting or polling (its lease runs its course), one never seen beating is not judged.
    assert [(j.id, j.lease_owner) for j in claimed] == [(ids[0], "survivor")]
    # Its old owner, were it alive after all, writes nothing more.
    with pytest.raises(store.LeaseLost):
        await job_store.apply(ids[0], lifecycle.RetryLater("late"), owner="dead")
    # With a longer patience, the dead worker is not dead yet.
    async with sessionmaker() as s, s.begin():
        await s.execute(update(Job).where(Job.id == ids[0]).values(lease_owner="dead"))
    assert (
        await store.claim_follow_ups(driver_pool, "survivor", LEASE, 10, timedelta(seconds=30))
        == []
    )


async def test_queued_jobs_claimed_by_a_worker_that_stopped_beating_are_taken_over_at_once(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
) -> None:
    """A worker killed between its dispatch claim and its submit leaves 'pending' jobs (nothing
    sent): they neither hold the account's slots nor wait for the lease."""
    await _queue(api, tenant, 3)
    stale = timedelta(seconds=5)
    dead = (await store.claim_dispatches(driver_pool, "dead", LEASE, 2, 3, None, stale)).jobs
    busy = (await store.claim_dispatches(driver_pool, "busy", LEASE, 1, 3, None, stale)).jobs
    assert len(dead) == 2 and len(busy) == 1
    for owner in ("dead", "busy"):
        await store.beat(driver_pool, owner)
    # All three slots are leased to live workers: nothing more is claimed.
    assert (
        await store.claim_dispatches(driver_pool, "survivor", LEASE, 3, 3, None, stale)
    ).jobs == []
    async with sessionmaker() as s, s.begin():  # "dead" last beat 10 s ago
        await s.execute(
            update(WorkerBeat)
            .where(WorkerBeat.owner == "dead")
            .values(beat_at=func.statement_timestamp() - timedelta(seconds=10))
        )
    taken = (await store.claim_dispatches(driver_pool, "survivor", LEASE, 3, 3, None, stale)).jobs
    # The dead worker's two, not the busy one's (it beats: its lease runs its course).
    assert sorted(j.id for j in taken) == sorted(j.id for j in dead)
    assert {j.lease_owner for j in taken} == {"survivor"}
    # Its old owner, were it alive after all, can no longer mark them sending.
    job_store = JobStore(sessionmaker, driver_pool, policy=lifecycle.Policy(), bill_422=False)
    with pytest.raises(store.LeaseLost):
        await job_store.mark_sending(dead[0], "dead", lifecycle.SubmitStarting())
    async with sessionmaker() as s:
        row = await s.get(Job, dead[0].id)
        assert row is not None
        assert row.submit_state is SubmitState.pending and row.lease_owner == "survivor"


def test_a_claimed_row_is_a_readable_job_in_a_process_that_used_no_orm_yet() -> None:
    # A worker's first claim may come before anything else of the ORM ran (its mappers not yet
    # configured): the job it makes of the row must still read and write like any other.
    script = (
        "import uuid\n"
        "from app.models import Job, JobStatus\n"
        "from app.jobs.store import job_from_row\n"
        "row = {c.name: None for c in Job.__table__.columns}\n"
        "row.update(id=uuid.UUID(int=7), status='queued', event_seq=2)\n"
        "job = job_from_row(row)\n"
        "job.event_seq += 1\n"
        "assert (job.id.int, job.status, job.event_seq) == (7, JobStatus.queued, 3)\n"
        "print('ok')\n"
    )
    done = subprocess.run(  # noqa: S603 (this interpreter, our script)
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr
