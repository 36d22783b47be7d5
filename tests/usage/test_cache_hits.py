"""A result-cache hit on the ledger: one record with no upstream request, priced by the
``cache_hit`` price (never a silent $0: no price blocks it like any usage), and never compared
with fal's bill."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.jobs import lifecycle, store
from app.models import Job, Price, UsageRecord, UsageStatus
from app.usage.reconcile import reconcile
from tests.conftest import ADMIN, TenantCreds
from tests.usage.conftest import KLING, job_store, set_tenant


async def _hit(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> str:
    """A queued job answered by the cache, as the worker's dispatch writes it."""
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    source = uuid.uuid4()
    hit = lifecycle.CacheHit(source, {"prompt": "x"}, "k" * 64)
    await job_store(sessionmaker).apply(uuid.UUID(job["id"]), hit, owner=None)
    return str(job["id"])


async def _hit_record(sessionmaker: async_sessionmaker, job_id: str) -> UsageRecord:
    async with sessionmaker() as s:
        stmt = select(UsageRecord).where(UsageRecord.job_id == uuid.UUID(job_id))
        return (await s.scalars(stmt)).one()


async def test_a_hit_is_one_record_without_a_request_at_the_seeded_free_price(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    await set_tenant(api, tenant, budget_usd="1.00")
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    reserved = (await api.get("/v1/me", headers=tenant.headers)).json()["budget"]
    assert reserved["reserved_usd"] == "0.035000"  # a URL job: the model's estimate, at accept
    hit = lifecycle.CacheHit(uuid.uuid4(), {"prompt": "x"}, "k" * 64)
    await job_store(sessionmaker).apply(uuid.UUID(job["id"]), hit, owner=None)
    budget = (await api.get("/v1/me", headers=tenant.headers)).json()["budget"]
    assert (budget["reserved_usd"], budget["spent_usd"]) == ("0.000000", "0.000000")
    job_id = str(job["id"])
    rec = await _hit_record(sessionmaker, job_id)
    assert (rec.upstream_request_id, rec.model, rec.unit, rec.outcome) == (
        None,
        "cache_hit",
        "hit",
        "cache_hit",
    )
    assert rec.status is UsageStatus.settled and rec.cost_micros == 0 and rec.units == 1
    async with sessionmaker() as s:
        job = await s.get(Job, uuid.UUID(job_id))
        assert job is not None and job.usage_settled and job.reserved_micros == 0


async def test_no_hit_price_blocks_the_hit_until_the_operator_sets_one(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    async with sessionmaker() as s, s.begin():
        await s.execute(delete(Price).where(Price.model == "cache_hit"))
    job_id = await _hit(api, tenant, sessionmaker)
    rec = await _hit_record(sessionmaker, job_id)
    assert rec.status is UsageStatus.unpriced and rec.cost_micros is None
    async with sessionmaker() as s:
        job = await s.get(Job, uuid.UUID(job_id))
        assert job is not None and job.usage_settled is False
    r = await api.post(
        "/v1/admin/prices",
        headers=ADMIN,
        json={
            "model": "cache_hit",
            "unit": "hit",
            "unit_price_usd": "0.001",
            "effective_from": "2024-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 201, r.text
    async with sessionmaker() as s, s.begin():
        assert await store.settle_blocked(s, bill_422=False) == 1
    rec = await _hit_record(sessionmaker, job_id)
    assert rec.status is UsageStatus.settled and rec.cost_micros == 1_000


async def test_reconcile_never_takes_a_hit_for_a_request_fal_should_have_billed(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    r = await api.post(
        "/v1/admin/prices",
        headers=ADMIN,
        json={"model": "cache_hit", "unit": "hit", "unit_price_usd": "0.002"},
    )
    assert r.status_code == 201, r.text
    start = datetime.now(UTC) - timedelta(minutes=1)
    job_id = await _hit(api, tenant, sessionmaker)
    assert (await _hit_record(sessionmaker, job_id)).cost_micros == 2_000
    async with sessionmaker() as s:
        report = await reconcile(s, [], start, start + timedelta(hours=1))
    assert report.ok, report.to_dict()
    assert report.ledger_requests == 0 and report.differences == []
