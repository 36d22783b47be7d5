"""Reconcile: the ledger against fal's billing events, exact at the window's edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.models import UsageRecord
from app.usage.reconcile import reconcile
from tests.conftest import TenantCreds
from tests.usage.conftest import KLING, finish, submit


def _event(request_id: str, at: datetime, nano_usd: int) -> dict:  # type: ignore[type-arg]
    return {
        "request_id": request_id,
        "endpoint_id": "fal-ai/kling-video/video-to-audio",
        "timestamp": at.isoformat(),
        "cost_estimate_nano_usd": nano_usd,
    }


async def test_a_request_recorded_before_the_window_and_billed_in_it_is_no_difference(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    await finish(sessionmaker, job["id"], "succeeded")
    start = datetime.now(UTC) + timedelta(seconds=5)
    end = start + timedelta(hours=1)
    async with sessionmaker() as s, s.begin():  # recorded (at its submit) before the window
        await s.execute(
            update(UsageRecord)
            .where(UsageRecord.upstream_request_id == rid)
            .values(created_at=start - timedelta(seconds=1))
        )
    events = [_event(rid, start + timedelta(seconds=1), 35_000_000)]  # billed inside it
    async with sessionmaker() as s:
        report = await reconcile(s, events, start, end)
    assert report.ok, report.to_dict()
    assert report.ledger_total_micros == report.fal_total_micros == 35_000


async def test_a_request_fal_billed_that_the_ledger_lacks_is_a_difference(
    api: httpx.AsyncClient, sessionmaker: async_sessionmaker
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    events = [_event("req-unknown", start + timedelta(seconds=1), 35_000_000)]
    async with sessionmaker() as s:
        report = await reconcile(s, events, start, start + timedelta(hours=1))
    assert [(d.kind, d.request_id) for d in report.differences] == [
        ("missing_in_ledger", "req-unknown")
    ]
