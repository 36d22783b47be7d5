from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.models import Job, JobStatus, SubmitState, UsageRecord
from app.usage import ledger
from tests.conftest import ADMIN, TenantCreds

VIDEO = "https://media.example/clip.mp4"
KLING = {"model": "kling-video-to-audio", "input": {"video_url": VIDEO}}
THINKSOUND = {"model": "thinksound", "input": {"video_url": VIDEO}}


async def set_tenant(api: httpx.AsyncClient, tenant: TenantCreds, **patch: object) -> dict:
    r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json=patch, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def submit(
    sessionmaker: async_sessionmaker, job_id: str, request_id: str | None = None
) -> str:
    """What the worker does when fal accepts the request."""
    rid = request_id or f"req-{uuid.uuid4()}"
    async with sessionmaker() as s, s.begin():
        job = await s.get(Job, uuid.UUID(job_id))
        job.submit_state = SubmitState.submitted
        job.upstream_request_id = rid
        job.status = JobStatus.starting
        await ledger.record_request(s, job, rid, unit=ledger.unit_of(job))
    return rid


async def finish(
    sessionmaker: async_sessionmaker,
    job_id: str,
    kind: str,
    *,
    inference_s: float | None = None,
    status: JobStatus = JobStatus.succeeded,
    bill_422: bool = False,
) -> None:
    """What the worker does when the job ends (settlement in the same transaction)."""
    async with sessionmaker() as s, s.begin():
        job = await s.get(Job, uuid.UUID(job_id))
        job.status = status
        job.inference_s = inference_s
        outcome = None if kind == "none" else ledger.Outcome(kind, inference_s)
        await ledger.settle_job(s, job, outcome, bill_422=bill_422)


async def record_of(sessionmaker: async_sessionmaker, request_id: str) -> UsageRecord:
    async with sessionmaker() as s:
        return (
            await s.scalars(
                select(UsageRecord).where(UsageRecord.upstream_request_id == request_id)
            )
        ).one()


def d(x: str) -> Decimal:
    return Decimal(x)
