"""Reconcile: the ledger against fal's billing events, exact at the window's edges."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.models import BudgetPeriod, UsageDaily, UsageRecord
from app.usage.reconcile import SLACK, events_window, reconcile
from tests.conftest import TenantCreds
from tests.usage.conftest import KLING, THINKSOUND, finish, set_tenant, submit


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


def _thinksound_event(request_id: str, at: datetime, nano_usd: int) -> dict:  # type: ignore[type-arg]
    return {**_event(request_id, at, nano_usd), "endpoint_id": "fal-ai/thinksound"}


async def _thinksound_jobs(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    seconds: list[float],
) -> list[str]:
    rids = []
    for s in seconds:
        job = (await api.post("/v1/jobs", json=THINKSOUND, headers=tenant.headers)).json()
        rid = await submit(sessionmaker, job["id"])
        await finish(sessionmaker, job["id"], "succeeded", inference_s=s)
        rids.append(rid)
    return rids


async def test_the_ledger_keeps_fals_precision_and_totals_round_once(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    # fal bills 3.0345 s at $0.001/s as 3,034,500 nano-dollars; rounded per request to the
    # micro-dollar that is 3,035, and ten of them 30,350 µ$ against fal's 30,345.
    rids = await _thinksound_jobs(api, tenant, sessionmaker, [3.0345] * 10)
    start = datetime.now(UTC) - timedelta(minutes=5)
    end = start + timedelta(hours=1)
    events = [_thinksound_event(rid, start + timedelta(minutes=1), 3_034_500) for rid in rids]
    async with sessionmaker() as s:
        report = await reconcile(s, events, start, end)
    assert report.ok, report.to_dict()
    assert report.ledger_total_nanos == report.fal_total_nanos == 30_345_000
    assert report.ledger_total_micros == report.fal_total_micros == 30_345
    [total] = report.totals
    assert (total.tenant_id, total.endpoint, total.ledger_requests, total.fal_requests) == (
        tenant.id,
        "fal-ai/thinksound",
        10,
        10,
    )
    assert total.to_dict()["ledger_usd"] == total.to_dict()["fal_usd"] == "0.030345"
    # What the tenant sees: the same total, rounded once.
    summary = (await api.get("/v1/usage?group_by=model", headers=tenant.headers)).json()
    assert summary["total_cost_usd"] == "0.030345"
    assert summary["data"][0]["cost_usd"] == "0.030345"


async def test_a_difference_below_a_micro_dollar_is_found(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    [rid] = await _thinksound_jobs(api, tenant, sessionmaker, [6.7337])
    start = datetime.now(UTC) - timedelta(minutes=5)
    end = start + timedelta(hours=1)
    # fal billed 0.1 µ$ less: the same micro-dollars rounded, a different bill.
    events = [_thinksound_event(rid, start + timedelta(minutes=1), 6_733_600)]
    async with sessionmaker() as s:
        report = await reconcile(s, events, start, end)
    assert [(d.kind, d.request_id, d.ledger_usd, d.fal_usd) for d in report.differences] == [
        ("cost_mismatch", rid, "0.006733700", "0.006733600")
    ]
    assert report.totals[0].ok  # equal to the micro-dollar; the request itself is not


@pytest.mark.parametrize(
    ("edge_after_record_ms", "billed_after_record_ms", "in_window"),
    [
        # Recorded (submitted) just before --to, billed (completed) just after it: the next
        # window's.
        (500, 1500, "after"),
        # Attached by its late webhook, so recorded after fal billed it, --to between the two:
        # this window's, and the next does not count it again.
        (-500, -1500, "before"),
    ],
)
async def test_a_request_either_side_of_the_edge_is_in_one_window_without_a_difference(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    edge_after_record_ms: int,
    billed_after_record_ms: int,
    in_window: str,
) -> None:
    [rid] = await _thinksound_jobs(api, tenant, sessionmaker, [6.7337])
    async with sessionmaker() as s:
        created = (await s.scalars(select(UsageRecord.created_at))).one()
    edge = created + timedelta(milliseconds=edge_after_record_ms)
    billed_at = created + timedelta(milliseconds=billed_after_record_ms)
    events = [_thinksound_event(rid, billed_at, 6_733_700)]
    async with sessionmaker() as s:
        windows = {
            "before": await reconcile(s, events, edge - timedelta(hours=1), edge),
            "after": await reconcile(s, events, edge, edge + timedelta(hours=1)),
        }
    assert all(w.ok for w in windows.values()), [w.to_dict() for w in windows.values()]
    counted = {name: (w.ledger_requests, w.fal_requests) for name, w in windows.items()}
    assert counted == {name: (1, 1) if name == in_window else (0, 0) for name in windows}
    assert windows[in_window].ledger_total_nanos == windows[in_window].fal_total_nanos


def _tagged(event: dict, tenant_id: str, job_id: str | None) -> dict:  # type: ignore[type-arg]
    tags = {"foley.tenant": tenant_id} | ({"foley.job": job_id} if job_id else {})
    return {**event, "tags": tags, "output_units": 1}


async def test_orphans_are_attributed_by_tag_and_billed_once_with_the_flag(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    await set_tenant(api, tenant, budget_usd="1.00")
    # A job that ended without a request of its own (fal's answer was lost; fal ran it).
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    await api.post(f"/v1/jobs/{job['id']}/cancel", headers=tenant.headers)
    live = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    start = datetime.now(UTC) - timedelta(minutes=5)
    end = start + timedelta(hours=1)
    at = start + timedelta(minutes=1)
    events = [
        _tagged(_event("req-of-job", at, 35_000_000), tenant.id, job["id"]),
        _tagged(_event("req-of-tenant", at, 35_000_000), tenant.id, None),
        _tagged(_event("req-of-live-job", at, 35_000_000), tenant.id, live["id"]),
        _tagged(_event("req-of-stranger", at, 35_000_000), str(uuid.uuid4()), None),
        _event("req-untagged", at, 35_000_000),
    ]
    async with sessionmaker() as s:  # without the flag: attributed, reported, nothing billed
        report = await reconcile(s, events, start, end)
    attributed = {d.request_id: (d.kind, d.tenant_id, d.job_id) for d in report.differences}
    assert attributed == {
        "req-of-job": ("missing_in_ledger", tenant.id, job["id"]),
        "req-of-tenant": ("missing_in_ledger", tenant.id, None),
        "req-of-live-job": ("missing_in_ledger", tenant.id, live["id"]),
        "req-of-stranger": ("missing_in_ledger", None, None),
        "req-untagged": ("missing_in_ledger", None, None),
    }
    for _ in range(2):  # the second run finds them on the ledger: billed once
        async with sessionmaker() as s, s.begin():
            report = await reconcile(s, events, start, end, bill_orphans=True)
        left = {d.request_id for d in report.differences}
        # A live job may still attach its request: left to it. Unknown tenants: reported.
        assert left == {"req-of-live-job", "req-of-stranger", "req-untagged"}
        assert report.ledger_requests == 2 and report.fal_requests == 5
    async with sessionmaker() as s:
        rows = await s.scalars(select(UsageRecord).order_by(UsageRecord.upstream_request_id))
        billed = [
            (r.upstream_request_id, str(r.job_id) if r.job_id else None, r.orphan, r.cost_nanos)
            for r in rows.all()
        ]
        spent = await s.scalar(select(BudgetPeriod.spent_micros))
        daily = await s.scalar(select(func.sum(UsageDaily.cost_nanos)))
    assert billed == [
        ("req-of-job", job["id"], False, 35_000_000),
        ("req-of-tenant", None, True, 35_000_000),
    ]
    assert spent == 70_000 and daily == 70_000_000
    # The job shows what fal billed for it; the tenant's usage counts both.
    view = (await api.get(f"/v1/jobs/{job['id']}", headers=tenant.headers)).json()["usage"]
    assert (view["cost_usd"], view["status"]) == ("0.035000", "settled")
    summary = (await api.get("/v1/usage", headers=tenant.headers)).json()
    assert summary["total_cost_usd"] == "0.070000"


def test_fals_events_are_read_around_the_window_within_what_a_datetime_holds() -> None:
    """A window from year 1 (a client may ask for one) is read from year 1, not an overflow."""
    lo, hi = datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert events_window(lo, hi) == (lo - SLACK, hi + SLACK)
    first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    assert events_window(first, datetime(3, 1, 1, tzinfo=UTC))[0] == first
    assert events_window(lo, datetime(9999, 12, 31, 23, tzinfo=UTC))[1] == last
