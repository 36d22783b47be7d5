"""A job's end is written on the raw connection (``JobStore.apply``) or through a session
(``JobStore.write``: a tenant's cancel, a webhook, the rare transitions ``apply`` hands over):
both write the same ledger row, daily roll-up, budget settlement, file rows and events."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.db.driver import driver_of
from app.files import service as files
from app.jobs import lifecycle, store
from app.models import FileKind, Job
from tests.conftest import TenantCreds, make_tenant
from tests.support.metrics import sample
from tests.usage.conftest import THINKSOUND, job_store, set_tenant, submit

SETTLED = "foley_usage_settled_total"
RESULT = {"prompt": "rain", "audio": {"file_id": "f", "content_type": "audio/mp4"}}


def _outputs(job_id: uuid.UUID) -> list[files.Output]:
    return [
        files.Output(
            uuid.uuid4(), FileKind.output_video, f"jobs/{job_id}/video.mp4", "video.mp4",
            "video/mp4", 1234, "a" * 64, {"container": "mp4", "duration_s": 4.0},
            "https://cdn.example/v.mp4",
        ),
        files.Output(
            uuid.uuid4(), FileKind.output_audio, f"jobs/{job_id}/audio.m4a", "audio.m4a",
            "audio/mp4", 567, "b" * 64, {"container": "mp4"}, None,
        ),
    ]  # fmt: skip


async def _money(sessionmaker: async_sessionmaker, tenant: TenantCreds, job_id: str) -> dict:
    """Everything a job's end wrote, without what differs by nature (ids, tenants, times)."""
    params = {"t": uuid.UUID(tenant.id), "j": uuid.UUID(job_id)}
    queries = {
        "job": "SELECT status, usage_settled, reserved_micros, result, event_seq, lease_owner,"
        " next_action_at FROM jobs WHERE id = :j",
        "events": "SELECT seq, type, data FROM job_events WHERE job_id = :j ORDER BY seq",
        "ledger": "SELECT model, endpoint, unit, units, unit_price_micros, price_id,"
        " estimated_cost_micros, cost_nanos, cost_micros, status, outcome, flagged, orphan,"
        " job_status, settled_at IS NOT NULL FROM usage_records WHERE job_id = :j",
        "daily": "SELECT model, job_status, unit, requests, units, cost_micros, cost_nanos"
        " FROM usage_daily WHERE tenant_id = :t",
        "period": "SELECT spent_micros, reserved_micros FROM budget_periods WHERE tenant_id = :t",
        "thresholds": "SELECT threshold_pct, spent_micros, budget_micros FROM budget_events"
        " WHERE tenant_id = :t ORDER BY threshold_pct",
        "files": "SELECT kind, filename, content_type, size_bytes, sha256, media, source_url,"
        " deleted_at FROM files WHERE job_id = :j ORDER BY filename",
    }
    async with sessionmaker() as s:
        return {
            name: [tuple(r) for r in (await s.execute(text(sql), params)).all()]
            for name, sql in queries.items()
        }


async def test_a_success_is_settled_the_same_on_the_raw_connection_and_through_a_session(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    other = await make_tenant(api, "globex")
    ended: dict[str, str] = {}
    for who in (tenant, other):
        await set_tenant(api, who, budget_usd="1.00", budget_thresholds=[1, 50])
        r = await api.post("/v1/jobs", json=THINKSOUND, headers=who.headers)
        assert r.status_code == 202, r.text
        ended[who.id] = r.json()["id"]
        await submit(sessionmaker, ended[who.id])
    # A ThinkSound success of 10.5 s of compute: 10,500 micro-dollars, past 1 % of $1.
    succeeded = lifecycle.Succeeded(RESULT, {}, 10.5, None)
    jobs = job_store(sessionmaker)
    raw_job = uuid.UUID(ended[tenant.id])

    async def record(conn: asyncpg.Connection, row: Job) -> None:
        await files.replace_job_outputs(conn, row.tenant_id, row.id, _outputs(row.id))

    applied = await jobs.apply(raw_job, succeeded, owner=None, also=record)
    assert applied.job.usage_settled and applied.job.reserved_micros == 0
    session_job = uuid.UUID(ended[other.id])
    async with sessionmaker() as session, session.begin():
        locked = await store.lock_for_tenant(session, uuid.UUID(other.id), session_job)
        assert locked is not None
        await jobs.write(session, locked, succeeded, owner=None)
        await record(await driver_of(session), locked)

    on_raw = await _money(sessionmaker, tenant, ended[tenant.id])
    in_session = await _money(sessionmaker, other, ended[other.id])
    # the same events, but for the request each job names
    assert [e[:2] for e in on_raw.pop("events")] == [e[:2] for e in in_session.pop("events")]
    assert on_raw == in_session
    (ledger_row,) = on_raw["ledger"]
    assert ledger_row[2] == "compute_second" and ledger_row[3] == Decimal("10.5")
    assert ledger_row[7:12] == (10_500_000, 10_500, "settled", "succeeded", False)
    assert on_raw["daily"] == [
        ("fal-ai/thinksound", "succeeded", "compute_second", 1, ledger_row[3], 10_500, 10_500_000)
    ]
    assert on_raw["period"] == [(10_500, 0)]  # spent; the reservation released
    assert on_raw["thresholds"] == [(1, 10_500, 1_000_000)]
    assert [f[0] for f in on_raw["files"]] == [FileKind.output_audio, FileKind.output_video]
    assert on_raw["job"][0][:3] == ("succeeded", True, 0)


async def test_a_spend_with_no_reservation_behind_it_is_charged_once_to_the_current_period(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    # Created before the tenant had a budget: nothing reserved. Its end is charged to the
    # period current then (seeded from the ledger), which the raw connection leaves to a
    # session: the first attempt rolls back whole and the session writes it, once.
    job = (await api.post("/v1/jobs", json=THINKSOUND, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    await set_tenant(api, tenant, budget_usd="1.00", budget_thresholds=[1])
    settled = {"model": "fal-ai/thinksound", "outcome": "succeeded"}
    before = await sample(api, SETTLED, **settled)
    jobs = job_store(sessionmaker)
    applied = await jobs.apply(
        uuid.UUID(job["id"]), lifecycle.Succeeded(RESULT, {}, 10.5, None), owner=None
    )
    assert applied.job.usage_settled and applied.job.status.value == "succeeded"
    money = await _money(sessionmaker, tenant, job["id"])
    assert [(r[8], r[9]) for r in money["ledger"]] == [(10_500, "settled")]
    assert [r[3] for r in money["daily"]] == [1]  # rolled up once
    assert await sample(api, SETTLED, **settled) == before + 1  # and counted once
    assert money["period"] == [(10_500, 0)]
    assert money["thresholds"] == [(1, 10_500, 1_000_000)]
    assert [e[1] for e in money["events"]][-1] == "job.succeeded"
    assert money["job"][0][4] == len(money["events"])  # one ending, its events once
    async with sessionmaker() as s:
        count = await s.scalar(
            text("SELECT count(*) FROM usage_records WHERE upstream_request_id = :r"), {"r": rid}
        )
    assert count == 1


async def test_a_cache_hit_is_settled_the_same_on_the_raw_connection_and_through_a_session(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    # A hit has no request at fal: its ledger row is the job's own, priced at the hit's price.
    other = await make_tenant(api, "initech")
    hit = lifecycle.CacheHit(uuid.uuid4(), {"prompt": "x"}, "k" * 64)
    jobs = job_store(sessionmaker)
    ids: dict[str, str] = {}
    for who in (tenant, other):
        await set_tenant(api, who, budget_usd="1.00")
        r = await api.post("/v1/jobs", json=THINKSOUND, headers=who.headers)
        assert r.status_code == 202, r.text
        ids[who.id] = r.json()["id"]
    applied = await jobs.apply(uuid.UUID(ids[tenant.id]), hit, owner=None)
    assert applied.job.usage_settled and applied.job.reserved_micros == 0
    async with sessionmaker() as session, session.begin():
        locked = await store.lock_for_tenant(session, uuid.UUID(other.id), uuid.UUID(ids[other.id]))
        assert locked is not None
        await jobs.write(session, locked, hit, owner=None)

    on_raw = await _money(sessionmaker, tenant, ids[tenant.id])
    in_session = await _money(sessionmaker, other, ids[other.id])
    assert [e[:2] for e in on_raw.pop("events")] == [e[:2] for e in in_session.pop("events")]
    assert on_raw == in_session
    (ledger_row,) = on_raw["ledger"]
    assert ledger_row[:4] == ("cache_hit", "fal-ai/thinksound", "hit", 1)
    assert ledger_row[8:11] == (0, "settled", "cache_hit")
    assert on_raw["period"] == [(0, 0)]  # nothing spent, the reservation released
    assert on_raw["job"][0][:3] == ("succeeded", True, 0)
