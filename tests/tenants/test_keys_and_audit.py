"""Keys completed (expiry, rotation grace, read-only, last use) and the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.kit.clock import frozen_at, utcnow
from app.models import AuditEvent
from tests.conftest import ADMIN, TenantCreds

KLING = {"model": "kling-video-to-audio", "input": {"video_url": "https://x.example/a.mp4"}}


async def _key_id(api: httpx.AsyncClient, tenant: TenantCreds) -> str:
    keys = (await api.get(f"/v1/admin/tenants/{tenant.id}/keys", headers=ADMIN)).json()["data"]
    return keys[0]["id"]


async def test_rotation_keeps_the_old_key_for_the_grace_period(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    old_id = await _key_id(api, tenant)
    now = utcnow()
    with frozen_at(now):
        r = await api.post(
            f"/v1/admin/tenants/{tenant.id}/keys/{old_id}/rotate",
            json={"grace_seconds": 600},
            headers=ADMIN,
        )
    assert r.status_code == 201
    rotated = r.json()
    new_key = rotated["new"]["key"]
    assert rotated["old"]["expires_at"] is not None
    new_headers = {"Authorization": f"Bearer {new_key}"}
    with frozen_at(now + timedelta(seconds=599)):
        assert (await api.get("/v1/jobs", headers=tenant.headers)).status_code == 200
        assert (await api.get("/v1/jobs", headers=new_headers)).status_code == 200
    with frozen_at(now + timedelta(seconds=601)):
        r = await api.get("/v1/jobs", headers=tenant.headers)
        assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
        assert (await api.get("/v1/jobs", headers=new_headers)).status_code == 200


async def test_expiring_key(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    ends = datetime(2031, 1, 1, tzinfo=UTC)
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys", json={"expires_at": ends.isoformat()}, headers=ADMIN
    )
    headers = {"Authorization": f"Bearer {r.json()['key']}"}
    with frozen_at(ends - timedelta(seconds=1)):
        assert (await api.get("/v1/jobs", headers=headers)).status_code == 200
    with frozen_at(ends):
        assert (await api.get("/v1/jobs", headers=headers)).status_code == 401


async def test_read_only_key_is_refused_on_post(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys", json={"read_only": True}, headers=ADMIN
    )
    assert r.json()["read_only"] is True
    ro = {"Authorization": f"Bearer {r.json()['key']}"}
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    assert (await api.get(f"/v1/jobs/{job['id']}", headers=ro)).status_code == 200
    assert (await api.get("/v1/usage", headers=ro)).status_code == 200
    for path in ("/v1/jobs", f"/v1/jobs/{job['id']}/cancel"):
        r = await api.post(path, json=KLING, headers=ro)
        assert r.status_code == 403 and r.json()["code"] == "key_read_only", path


async def test_last_used_is_recorded_and_throttled(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    t0 = utcnow()
    with frozen_at(t0):
        await api.get("/v1/jobs", headers=tenant.headers)
    with frozen_at(t0 + timedelta(seconds=30)):
        await api.get("/v1/jobs", headers=tenant.headers)  # within 60 s: not written again
    keys = (await api.get(f"/v1/admin/tenants/{tenant.id}/keys", headers=ADMIN)).json()["data"]
    assert datetime.fromisoformat(keys[0]["last_used_at"]) == t0
    with frozen_at(t0 + timedelta(seconds=61)):
        await api.get("/v1/jobs", headers=tenant.headers)
    keys = (await api.get(f"/v1/admin/tenants/{tenant.id}/keys", headers=ADMIN)).json()["data"]
    assert datetime.fromisoformat(keys[0]["last_used_at"]) == t0 + timedelta(seconds=61)


async def test_every_admin_mutation_is_audited_and_the_log_is_append_only(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    key_id = await _key_id(api, tenant)
    await api.patch(f"/v1/admin/tenants/{tenant.id}", json={"budget_usd": "5.00"}, headers=ADMIN)
    await api.post(f"/v1/admin/tenants/{tenant.id}/keys/{key_id}/rotate", headers=ADMIN)
    await api.post(f"/v1/admin/tenants/{tenant.id}/keys/{key_id}/revoke", headers=ADMIN)
    async with sessionmaker() as s:
        events = (
            await s.scalars(select(AuditEvent).order_by(AuditEvent.at, AuditEvent.action))
        ).all()
    actions = [e.action for e in events]
    assert actions.count("tenant.create") == 1 and "tenant.update" in actions
    assert {"api_key.create", "api_key.rotate", "api_key.revoke"} <= set(actions)
    update = next(e for e in events if e.action == "tenant.update")
    assert update.actor == "admin" and update.target_id == tenant.id
    assert update.before["budget_usd"] is None and update.after["budget_usd"] == "5.000000"
    assert update.request_id and update.request_id.startswith("req_")
    async with sessionmaker() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            async with s.begin():
                await s.execute(text("UPDATE audit_events SET actor = 'mallory'"))
    async with sessionmaker() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            async with s.begin():
                await s.execute(text("DELETE FROM audit_events"))
    async with sessionmaker() as s:
        with pytest.raises(DBAPIError, match="append-only"):
            async with s.begin():
                await s.execute(text("TRUNCATE audit_events"))
