"""The ledger: priced by the billing rules, exactly once, never a silent $0."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.jobs import store
from app.models import Job, Price, UsageDaily, UsageRecord, UsageStatus
from app.usage import ledger, rollups
from tests.conftest import ADMIN, TenantCreds
from tests.support.metrics import sample
from tests.usage.conftest import KLING, THINKSOUND, d, finish, record_of, submit

UNPRICED = "foley_usage_unpriced_total"


async def test_success_is_settled_once_at_the_price_in_force(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    job = (await api.post("/v1/jobs", json=THINKSOUND, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    assert (await record_of(sessionmaker, rid)).status is UsageStatus.estimated
    await finish(sessionmaker, job["id"], "succeeded", inference_s=6.7337)
    await finish(sessionmaker, job["id"], "succeeded", inference_s=99.0)  # a repeat: no effect
    rec = await record_of(sessionmaker, rid)
    assert rec.status is UsageStatus.settled
    assert rec.units == d("6.7337") and rec.unit == "compute_second"
    assert rec.unit_price_micros == 1000 and rec.cost_micros == 6734  # half-up to a micro-dollar
    assert rec.cost_nanos == 6_733_700  # exact: fal's precision
    assert rec.price_id is not None
    view = (await api.get(f"/v1/jobs/{job['id']}", headers=tenant.headers)).json()["usage"]
    assert view == {
        "unit": "compute_second",
        "units": "6.7337",
        "estimated_cost_usd": view["estimated_cost_usd"],
        "cost_usd": "0.006734",
        "cost_usd_exact": "0.006733700",
        "status": "settled",
    }
    async with sessionmaker() as s:
        daily = (await s.scalars(select(UsageDaily))).all()
    assert [(r.requests, r.cost_micros, r.cost_nanos, r.job_status) for r in daily] == [
        (1, 6734, 6_733_700, "succeeded")
    ]


async def test_the_same_request_is_never_recorded_twice(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    async with sessionmaker() as s, s.begin():
        row = await s.get(Job, uuid.UUID(job["id"]))
        for _ in range(3):  # retries, duplicate webhooks, a second worker
            await ledger.record_request(s, row, rid, unit="video")
    await finish(sessionmaker, job["id"], "succeeded")
    async with sessionmaker() as s:
        n = await s.scalar(select(func.count()).select_from(UsageRecord))
    assert n == 1
    assert (await record_of(sessionmaker, rid)).cost_micros == 35_000


async def test_unknown_price_blocks_settlement_and_alerts(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    async with sessionmaker() as s, s.begin():
        await s.execute(delete(Price).where(Price.model == "fal-ai/kling-video/video-to-audio"))
    before = await sample(api, UNPRICED, model="fal-ai/kling-video/video-to-audio")
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    await finish(sessionmaker, job["id"], "succeeded")
    rec = await record_of(sessionmaker, rid)
    assert rec.status is UsageStatus.unpriced and rec.cost_micros is None  # not a silent $0
    assert await sample(api, UNPRICED, model="fal-ai/kling-video/video-to-audio") == before + 1
    async with sessionmaker() as s:
        assert (await s.get(Job, uuid.UUID(job["id"]))).usage_settled is False
    # The operator adds the price (effective from before the request): settlement resumes.
    r = await api.post(
        "/v1/admin/prices",
        headers=ADMIN,
        json={
            "model": "fal-ai/kling-video/video-to-audio",
            "unit": "video",
            "unit_price_usd": "0.040",
            "effective_from": "2024-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 201, r.text
    async with sessionmaker() as s, s.begin():
        assert await store.settle_blocked(s, bill_422=False) == 1
    rec = await record_of(sessionmaker, rid)
    assert rec.status is UsageStatus.settled and rec.cost_micros == 40_000


async def test_a_job_with_no_price_is_refused_when_a_budget_must_be_checked(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    from tests.usage.conftest import set_tenant

    await set_tenant(api, tenant, budget_usd="10.00")
    async with sessionmaker() as s, s.begin():
        await s.execute(delete(Price).where(Price.model == "fal-ai/thinksound"))
    r = await api.post("/v1/jobs", json=THINKSOUND, headers=tenant.headers)
    assert r.status_code == 503 and r.json()["code"] == "price_unknown"


async def test_prices_are_versioned_by_effective_date(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    r = await api.post(
        "/v1/admin/prices",
        headers=ADMIN,
        json={
            "model": "fal-ai/kling-video/video-to-audio",
            "unit": "video",
            "unit_price_usd": "0.050",
            "effective_from": "2099-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 201
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    await finish(sessionmaker, job["id"], "succeeded")
    assert (await record_of(sessionmaker, rid)).cost_micros == 35_000  # the future price waits
    listed = (
        await api.get("/v1/admin/prices?model=fal-ai/kling-video/video-to-audio", headers=ADMIN)
    ).json()["data"]
    assert [p["unit_price_usd"] for p in listed] == ["0.035000", "0.050000"]
    r = await api.post(
        "/v1/admin/prices",
        headers=ADMIN,
        json={
            "model": "fal-ai/kling-video/video-to-audio",
            "unit": "video",
            "unit_price_usd": "0.0000001",
        },
    )
    assert r.status_code == 422 and r.json()["param"] == "unit_price_usd"


async def test_rollups_match_the_ledger_and_rebuild_deterministically(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    for kind in ("succeeded", "succeeded", "upstream_5xx"):
        job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
        await submit(sessionmaker, job["id"])
        await finish(sessionmaker, job["id"], kind)
    async with sessionmaker() as s:
        before = sorted(
            (r.job_status, r.requests, r.cost_micros)
            for r in (await s.scalars(select(UsageDaily))).all()
        )
        ledger_total = await s.scalar(select(func.sum(UsageRecord.cost_micros)))
    assert sum(c for _, _, c in before) == ledger_total == 70_000
    from datetime import date, timedelta

    today = date.today()
    async with sessionmaker() as s, s.begin():
        await rollups.rebuild_rollups(s, today - timedelta(days=2), today + timedelta(days=2))
    async with sessionmaker() as s:
        after = sorted(
            (r.job_status, r.requests, r.cost_micros)
            for r in (await s.scalars(select(UsageDaily))).all()
        )
    assert after == before
