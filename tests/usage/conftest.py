from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.jobs import lifecycle
from app.jobs.store import JobStore
from app.models import UsageRecord
from app.upstream.schemas import ResultCancelled, ResultFailed
from tests.conftest import ADMIN, TenantCreds
from tests.support.driver import TransactionPool

VIDEO = "https://media.example/clip.mp4"
KLING = {"model": "kling-video-to-audio", "input": {"video_url": VIDEO}}
THINKSOUND = {"model": "thinksound", "input": {"video_url": VIDEO}}


async def set_tenant(api: httpx.AsyncClient, tenant: TenantCreds, **patch: object) -> dict:
    r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json=patch, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


def job_store(sessionmaker: async_sessionmaker) -> JobStore:
    # The test's connection (the sessionmaker's bind): its raw statements join the test's
    # transaction too.
    driver = TransactionPool(sessionmaker.kw["bind"])
    return JobStore(sessionmaker, driver, policy=lifecycle.Policy(), bill_422=False)


async def submit(
    sessionmaker: async_sessionmaker, job_id: str, request_id: str | None = None
) -> str:
    """What the worker does when fal accepts the request (through the jobs store)."""
    rid = request_id or f"req-{uuid.uuid4()}"
    store = job_store(sessionmaker)
    await store.apply(uuid.UUID(job_id), lifecycle.SubmitStarting(), owner=None)
    submitted = lifecycle.Submitted(rid, None, None, None, 0)
    await store.apply(uuid.UUID(job_id), submitted, owner=None)
    return rid


async def finish(
    sessionmaker: async_sessionmaker,
    job_id: str,
    kind: str,
    *,
    inference_s: float | None = None,
    bill_422: bool = False,
    result: dict | None = None,
) -> None:
    """What the worker does when fal's request ends ``kind`` (billing's words): the job's final
    transition, its usage settled in the same transaction (through the jobs store)."""
    store = job_store(sessionmaker)
    store.bill_422 = bill_422
    event: lifecycle.Event
    if kind == "succeeded":
        event = lifecycle.Succeeded(result or {}, {}, inference_s, None)
    elif kind.startswith("upstream_"):
        code = {"upstream_422": 422, "upstream_4xx": 400, "upstream_5xx": 500}[kind]
        failed = ResultFailed(code, None, None, "failed", retryable=code >= 500)
        event = lifecycle.Ended(failed, inference_s, None)
    elif kind.startswith("canceled_"):
        event = lifecycle.Ended(ResultCancelled(499, None, "canceled"), inference_s, None)
    else:
        raise AssertionError(f"no such outcome: {kind}")
    await store.apply(uuid.UUID(job_id), event, owner=None)


async def record_of(sessionmaker: async_sessionmaker, request_id: str) -> UsageRecord:
    async with sessionmaker() as s:
        return (
            await s.scalars(
                select(UsageRecord).where(UsageRecord.upstream_request_id == request_id)
            )
        ).one()


def d(x: str) -> Decimal:
    return Decimal(x)
