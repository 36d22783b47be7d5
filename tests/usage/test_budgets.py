"""Budgets: reserve on create, settle on completion, release on failure; periods roll over."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.kit.clock import frozen_at
from app.models import BudgetEvent, BudgetPeriod
from app.usage.estimates import RATIO_CACHE
from tests.conftest import TenantCreds
from tests.usage.conftest import KLING, THINKSOUND, finish, set_tenant, submit


async def _periods(sessionmaker: async_sessionmaker, tenant: TenantCreds) -> list[tuple]:
    async with sessionmaker() as s:
        rows = (
            await s.scalars(
                select(BudgetPeriod)
                .where(BudgetPeriod.tenant_id == uuid.UUID(tenant.id))
                .order_by(BudgetPeriod.period_start)
            )
        ).all()
    return [(r.period_start.strftime("%Y-%m"), r.spent_micros, r.reserved_micros) for r in rows]


async def test_over_budget_is_402_and_nothing_is_queued(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    t = await set_tenant(api, tenant, budget_usd="0.07", budget_period="month")
    assert t["budget_usd"] == "0.070000" and t["budget"]["remaining_usd"] == "0.070000"
    for _ in range(2):
        assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202
    r = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
    assert r.status_code == 402
    problem = r.json()
    assert problem["code"] == "budget_exceeded"
    assert problem["remaining_usd"] == "0.000000" and problem["estimated_cost_usd"] == "0.035000"
    jobs = (await api.get("/v1/jobs", headers=tenant.headers)).json()["data"]
    assert len(jobs) == 2
    t = (await api.get(f"/v1/admin/tenants/{tenant.id}", headers=_admin())).json()
    assert t["budget"]["reserved_usd"] == "0.070000"


def _admin() -> dict[str, str]:
    from tests.conftest import ADMIN

    return ADMIN


async def test_settle_to_real_cost_and_release_on_failure(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    await set_tenant(api, tenant, budget_usd="1.00")
    ok = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    bad = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    canceled = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    month = datetime.now(UTC).strftime("%Y-%m")
    assert await _periods(sessionmaker, tenant) == [(month, 0, 105_000)]
    await submit(sessionmaker, ok["id"])
    await finish(sessionmaker, ok["id"], "succeeded")
    await submit(sessionmaker, bad["id"])
    await finish(sessionmaker, bad["id"], "upstream_5xx")
    r = await api.post(f"/v1/jobs/{canceled['id']}/cancel", headers=tenant.headers)
    assert r.json()["status"] == "canceled"
    assert await _periods(sessionmaker, tenant) == [(month, 35_000, 0)]


async def test_thresholds_are_recorded_once(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    await set_tenant(api, tenant, budget_usd="0.10", budget_thresholds=[30, 60, 100])
    for _ in range(2):
        job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
        await submit(sessionmaker, job["id"])
        await finish(sessionmaker, job["id"], "succeeded")
    async with sessionmaker() as s:
        events = (await s.scalars(select(BudgetEvent).order_by(BudgetEvent.threshold_pct))).all()
    assert [(e.threshold_pct, e.spent_micros) for e in events] == [(30, 35_000), (60, 70_000)]


async def test_month_rollover(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    await set_tenant(api, tenant, budget_usd="0.05", budget_period="month")
    with frozen_at(datetime(2031, 1, 31, 23, 59, 30, tzinfo=UTC)):
        jan = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
        r = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
        assert r.status_code == 402  # January is full
    with frozen_at(datetime(2031, 2, 1, 0, 0, 30, tzinfo=UTC)):
        feb = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
        assert feb.status_code == 202  # a new period, a new budget
        # January's job finishes in February: it settles against January.
        await submit(sessionmaker, jan["id"])
        await finish(sessionmaker, jan["id"], "succeeded")
    periods = [p for p in await _periods(sessionmaker, tenant) if p[0].startswith("2031")]
    assert periods == [("2031-01", 35_000, 0), ("2031-02", 0, 35_000)]


async def test_duration_periods(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    with frozen_at(datetime(2031, 5, 10, 12, 0, tzinfo=UTC)):
        t = await set_tenant(api, tenant, budget_usd="0.04", budget_period="7d")
        assert t["budget_period"] == "604800s"
        assert t["budget"]["period_start"] == "2031-05-10T12:00:00+00:00"
        assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202
        assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 402
    with frozen_at(datetime(2031, 5, 17, 12, 0, 1, tzinfo=UTC)):
        assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202


async def test_removing_the_budget(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    await set_tenant(api, tenant, budget_usd="0.00")
    assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 402
    t = await set_tenant(api, tenant, budget_usd=None)
    assert t["budget_usd"] is None and t["budget"] is None
    assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202


async def test_dry_run_estimates_without_creating(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    await set_tenant(api, tenant, budget_usd="0.02")
    r = await api.post("/v1/jobs?dry_run=true", json=KLING, headers=tenant.headers)
    assert r.status_code == 200
    est = r.json()
    assert est["object"] == "estimate" and est["estimated_cost_usd"] == "0.035000"
    assert est["allowed"] is False and est["reason"] == "budget_exceeded"
    assert est["budget"]["remaining_usd"] == "0.020000"
    r = await api.post("/v1/jobs?dry_run=true", json=THINKSOUND, headers=tenant.headers)
    est = r.json()
    # 10 s assumed × 1.0 compute s per video s (the default until jobs are seen) × $0.001
    assert est["unit"] == "compute_second" and est["estimated_cost_usd"] == "0.010000"
    assert est["basis"] == "default" and est["allowed"] is True
    assert (await api.get("/v1/jobs", headers=tenant.headers)).json()["data"] == []


async def test_thinksound_estimate_learns_from_settled_jobs(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    for _ in range(5):
        job = (await api.post("/v1/jobs", json=THINKSOUND, headers=tenant.headers)).json()
        await submit(sessionmaker, job["id"])
        video = {"video": {"duration_s": 4.0}}  # 0.5 s per video s
        await finish(sessionmaker, job["id"], "succeeded", inference_s=2.0, result=video)
    est = (await api.post("/v1/jobs?dry_run=true", json=THINKSOUND, headers=tenant.headers)).json()
    assert est["basis"] == "default"  # the process keeps the ratio it read for a minute …
    RATIO_CACHE.clear()  # … then reads it again
    est = (await api.post("/v1/jobs?dry_run=true", json=THINKSOUND, headers=tenant.headers)).json()
    assert est["basis"] == "learned" and est["units"] == "5.000000"  # 10 s × 0.5
