"""The jobs store's transitions: the one-statement 'sending' mark writes what the lifecycle
decides, leases guard every write, and each transition appends its event."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.jobs import lifecycle, store
from app.jobs.store import JobStore, LeaseLost
from app.models import Job, JobEvent, JobStatus, SubmitState
from tests.conftest import TenantCreds
from tests.support.driver import TransactionPool

KLING = {"model": "kling-video-to-audio", "input": {"video_url": "https://x.example/a.mp4"}}
LEASE = timedelta(seconds=60)
STALE = timedelta(seconds=5)  # a lease holder silent this long is dead
STARTING = lifecycle.SubmitStarting(
    probe={"container": "mp4", "duration_s": 4.0},
    upstream_payload={"video_url": "https://cdn.example/a.mp4", "sound_effect_prompt": "x"},
    estimated_cost_micros=35_000,
    cache_key="c" * 64,
)


@pytest.fixture
def job_store(sessionmaker: async_sessionmaker, driver_pool: TransactionPool) -> JobStore:
    return JobStore(sessionmaker, driver_pool, policy=lifecycle.Policy(), bill_422=False)


async def _claimed(api: httpx.AsyncClient, tenant: TenantCreds, driver_pool, n: int) -> list[Job]:  # type: ignore[no-untyped-def]
    for _ in range(n):
        assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202
    return (await store.claim_dispatches(driver_pool, "w1", LEASE, n, 100, None, STALE)).jobs


COLUMNS = (
    "submit_state",
    "submit_attempts",
    "input_probe",
    "upstream_payload",
    "estimated_cost_micros",
    "cache_key",
    "lease_owner",
    "event_seq",
)


async def _state(
    sessionmaker: async_sessionmaker, job_id: uuid.UUID, columns: tuple[str, ...] = COLUMNS
) -> tuple[dict, list]:  # type: ignore[type-arg]
    """The job's columns, and its events as (seq, type, data)."""
    async with sessionmaker() as s:
        job = await s.get(Job, job_id, populate_existing=True)
        assert job is not None
        events = (
            await s.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
            )
        ).all()
        return {c: getattr(job, c) for c in columns}, [(e.seq, e.type, e.data) for e in events]


async def test_the_one_statement_sending_mark_writes_what_the_lifecycle_decides(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
    job_store: JobStore,
) -> None:
    fast, general = await _claimed(api, tenant, driver_pool, 2)
    assert await job_store.mark_sending(fast, "w1", STARTING) is None  # one statement
    assert fast.submit_state is SubmitState.sending
    applied = await job_store.apply(general.id, STARTING, owner="w1")  # through a session
    assert applied.job.submit_state is SubmitState.sending
    fast_row, fast_events = await _state(sessionmaker, fast.id)
    general_row, general_events = await _state(sessionmaker, general.id)
    assert fast_row == general_row
    assert fast_row["submit_state"] is SubmitState.sending and fast_row["lease_owner"] == "w1"
    assert (
        fast_events
        == general_events
        == [
            (1, "job.created", {"status": "queued", "model": "fal-ai/kling-video/video-to-audio"}),
            (2, "job.submitting", {"attempt": 1}),
        ]
    )


async def test_nothing_is_written_without_the_lease(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
    job_store: JobStore,
) -> None:
    (job,) = await _claimed(api, tenant, driver_pool, 1)
    before = await _state(sessionmaker, job.id)
    with pytest.raises(LeaseLost):
        await job_store.mark_sending(job, "w2", STARTING)
    with pytest.raises(LeaseLost):
        await job_store.apply(job.id, lifecycle.RetryLater("x"), owner="w2")
    assert await _state(sessionmaker, job.id) == before


async def test_a_job_canceled_while_claimed_is_never_marked_sending(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
    job_store: JobStore,
) -> None:
    (job,) = await _claimed(api, tenant, driver_pool, 1)
    r = await api.post(f"/v1/jobs/{job.id}/cancel", headers=tenant.headers)
    assert r.json()["status"] == "canceled"
    # A finished job holds no lease: the step that claimed it learns it may not write.
    with pytest.raises(LeaseLost):
        await job_store.mark_sending(job, "w1", STARTING)
    row, events = await _state(sessionmaker, job.id)
    assert row["submit_state"] is SubmitState.pending and row["submit_attempts"] == 0
    assert row["lease_owner"] is None
    assert [e[1] for e in events] == ["job.created", "job.canceled"]


async def test_a_released_job_is_due_again_and_unleased(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
    job_store: JobStore,
) -> None:
    (job,) = await _claimed(api, tenant, driver_pool, 1)
    applied = await job_store.apply(job.id, lifecycle.InputUnavailable("refused"), owner="w1")
    assert applied.next_action_at is not None and applied.job.lease_owner is None
    assert applied.transition.events == ()  # a retry is not a transition of the job's life
    row, events = await _state(sessionmaker, job.id)
    assert row["lease_owner"] is None and len(events) == 1


async def test_a_transition_is_written_the_same_with_or_without_a_session(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
    job_store: JobStore,
) -> None:
    alone, in_session = await _claimed(api, tenant, driver_pool, 2)
    for job in (alone, in_session):
        await job_store.apply(job.id, lifecycle.SubmitStarting(), owner="w1")
        submitted = lifecycle.Submitted(f"req-{job.id}", "https://q/s", None, None, 3)
        await job_store.apply(job.id, submitted, owner="w1")
    log = {"message": "step 1", "level": "INFO", "source": "USER", "timestamp": "t"}
    progress = lifecycle.Progress(True, None, [log], polled=False)
    applied = await job_store.apply(alone.id, progress, owner=None)  # statements on the driver
    assert applied.job.status.value == "processing"
    async with sessionmaker() as session, session.begin():  # the same, through a session
        locked = await store.lock_for_tenant(session, uuid.UUID(tenant.id), in_session.id)
        assert locked is not None
        await job_store.write(session, locked, progress, owner=None)

    columns = ("status", "queue_position", "logs", "event_seq", "lease_owner")
    row, events = await _state(sessionmaker, alone.id, columns)
    other_row, other_events = await _state(sessionmaker, in_session.id, columns)
    assert row == other_row
    # the same events (their data name each job's own request and start)
    assert [e[:2] for e in events] == [e[:2] for e in other_events]
    assert events[-1] == other_events[-1]
    assert row == {
        "status": JobStatus.processing,
        "queue_position": None,
        "logs": [log],
        "event_seq": 5,
        "lease_owner": None,
    }
    assert [e[1] for e in events] == [
        "job.created",
        "job.submitting",
        "job.started",
        "job.processing",
        "job.logs",
    ]
    assert events[-1][2] == {"lines": [log]}


async def test_what_is_found_in_the_transitions_transaction_is_written_under_the_lease(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    driver_pool: TransactionPool,
    job_store: JobStore,
) -> None:
    (job,) = await _claimed(api, tenant, driver_pool, 1)
    before = await _state(sessionmaker, job.id)
    seen: list[str | None] = []

    async def nothing(session, row):  # type: ignore[no-untyped-def]
        seen.append(row.lease_owner)  # the locked row, as it stands
        return None

    assert await job_store.apply_found(job.id, nothing, owner="w1") is None
    assert seen == ["w1"] and await _state(sessionmaker, job.id) == before
    with pytest.raises(LeaseLost):
        await job_store.apply_found(job.id, nothing, owner="w2")
    also: list[str] = []

    async def mark(session, row) -> None:  # type: ignore[no-untyped-def]
        also.append(row.status.value)

    async def hit(session, row):  # type: ignore[no-untyped-def]
        return lifecycle.CacheHit(uuid.uuid4(), {"prompt": "x"}, "k" * 64), mark

    applied = await job_store.apply_found(job.id, hit, owner="w1")
    assert applied is not None and applied.job.status is JobStatus.succeeded
    assert also == ["succeeded"]  # with the transition, after it
    row, events = await _state(sessionmaker, job.id)
    assert row["lease_owner"] is None
    assert [e[1] for e in events] == ["job.created", "job.cache_hit", "job.succeeded"]
