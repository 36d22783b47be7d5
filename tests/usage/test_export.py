"""The CSV export: Postgres writes it (COPY … TO STDOUT), in the shape the API speaks."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.kit.clock import utcnow
from app.models import UsageRecord, UsageStatus
from app.usage.export import CSV_COLUMNS
from tests.conftest import ADMIN, TenantCreds
from tests.usage.conftest import THINKSOUND, finish, submit


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def _record(sessionmaker: async_sessionmaker, tenant: TenantCreds, **values: object) -> str:
    rid = f"req-{uuid.uuid4()}"
    row = {
        "upstream_request_id": rid,
        "tenant_id": uuid.UUID(tenant.id),
        "model": "fal-ai/thinksound",
        "endpoint": "fal-ai/thinksound",
        "unit": "compute_second",
        "estimated_cost_micros": 10_000,
        "status": UsageStatus.settled,
        "created_at": utcnow().replace(microsecond=250_000),
        **values,
    }
    async with sessionmaker() as s, s.begin():
        s.add(UsageRecord(**row))
    return rid


async def test_each_value_is_written_as_the_api_writes_it(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    job = (await api.post("/v1/jobs", json=THINKSOUND, headers=tenant.headers)).json()
    rid = await submit(sessionmaker, job["id"])
    await finish(sessionmaker, job["id"], "succeeded", inference_s=6.7337)
    whole_second = datetime.now(UTC).replace(microsecond=0)
    odd = await _record(
        sessionmaker,
        tenant,
        units=Decimal("10.000000"),
        unit_price_micros=1,
        cost_micros=0,
        cost_nanos=500,  # half a micro-dollar: fal's nine decimals keep it
        outcome="upstream_422",
        flagged=True,
        orphan=True,
        created_at=whole_second,
        settled_at=whole_second + timedelta(microseconds=7),
    )
    pending = await _record(sessionmaker, tenant, status=UsageStatus.estimated)

    r = await api.get("/v1/usage/export.csv", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    today = utcnow().date()
    assert r.headers["content-disposition"] == (
        f'attachment; filename="foley-usage-{today.replace(day=1)}-{today + timedelta(days=1)}.csv"'
    )
    lines = r.content.split(b"\r\n")
    assert lines[0].decode() == ",".join(CSV_COLUMNS) and lines[-1] == b""
    assert b"\n" not in b"".join(lines)  # every line ends CRLF (RFC 4180), as it always did
    rows = {row["request_id"]: row for row in _rows(r.text)}
    assert set(rows) == {rid, odd, pending}

    view = (await api.get(f"/v1/jobs/{job['id']}", headers=tenant.headers)).json()
    settled = rows[rid]
    assert settled["job_id"] == job["id"] and settled["tenant_id"] == tenant.id
    assert (settled["units"], settled["unit_price_usd"], settled["cost_usd"]) == (
        "6.7337",
        "0.001000",
        "0.006734",
    )
    assert settled["cost_usd_exact"] == view["usage"]["cost_usd_exact"] == "0.006733700"
    assert settled["estimated_cost_usd"] == view["usage"]["estimated_cost_usd"]
    assert (settled["status"], settled["outcome"]) == ("settled", "succeeded")
    assert (settled["flagged"], settled["orphan"]) == ("false", "false")
    created = datetime.fromisoformat(settled["created_at"])
    assert settled["created_at"] == created.isoformat() and created.tzinfo == UTC

    assert {k: v for k, v in rows[odd].items() if k not in ("tenant_id", "request_id")} == {
        "job_id": "",
        "model": "fal-ai/thinksound",
        "endpoint": "fal-ai/thinksound",
        "unit": "compute_second",
        "units": "10",
        "unit_price_usd": "0.000001",
        "cost_usd": "0.000000",
        "estimated_cost_usd": "0.010000",
        "status": "settled",
        "outcome": "upstream_422",
        "flagged": "true",
        "orphan": "true",
        "created_at": whole_second.isoformat(),  # no fraction when it is zero, as isoformat()
        "settled_at": (whole_second + timedelta(microseconds=7)).isoformat(),
        "cost_usd_exact": "0.000000500",
    }
    missing = {k for k, v in rows[pending].items() if v == ""}
    assert missing == {
        "job_id",
        "units",
        "unit_price_usd",
        "cost_usd",
        "outcome",
        "settled_at",
        "cost_usd_exact",
    }


async def test_a_tenant_exports_its_own_rows_in_the_range_only(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    other_tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
) -> None:
    now = utcnow()
    first = await _record(sessionmaker, tenant, created_at=now - timedelta(days=40))
    second = await _record(sessionmaker, tenant, created_at=now - timedelta(days=1))
    third = await _record(sessionmaker, tenant, created_at=now)
    theirs = await _record(sessionmaker, other_tenant, created_at=now)
    start = (now - timedelta(days=41)).date()
    end = (now + timedelta(days=1)).date()

    async def export(key: dict[str, str], path: str, **params: str) -> list[str]:
        r = await api.get(path, params=params, headers=key)
        assert r.status_code == 200, r.text
        return [row["request_id"] for row in _rows(r.text)]

    mine = await export(tenant.headers, "/v1/usage/export.csv", **{"from": str(start)})
    assert mine == [first, second, third]  # oldest first; another tenant's never
    assert await export(
        tenant.headers,
        "/v1/usage/export.csv",
        **{"from": str(now.date() - timedelta(days=1)), "to": str(now.date())},
    ) == [second]
    assert await export(other_tenant.headers, "/v1/usage/export.csv", **{"from": str(start)}) == [
        theirs
    ]
    everyone = await export(
        ADMIN, "/v1/admin/usage/export.csv", **{"from": str(start), "to": str(end)}
    )
    assert sorted(everyone) == sorted([first, second, third, theirs])
    one = await export(
        ADMIN, "/v1/admin/usage/export.csv", **{"from": str(start), "tenant": other_tenant.id}
    )
    assert one == [theirs]
    # An empty range is the header alone.
    empty = await api.get(
        "/v1/usage/export.csv",
        params={"from": "2001-01-01", "to": "2001-02-01"},
        headers=tenant.headers,
    )
    assert empty.content == (",".join(CSV_COLUMNS) + "\r\n").encode()


async def test_a_bad_range_is_a_problem_not_an_export(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.get(
        "/v1/usage/export.csv",
        params={"from": "2026-02-01", "to": "2026-01-01"},
        headers=tenant.headers,
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_range" or r.json()["errors"][0]["code"] == "invalid_range"
    r = await api.get("/v1/usage/export.csv")
    assert r.status_code == 401
