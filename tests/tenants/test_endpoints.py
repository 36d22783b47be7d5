from __future__ import annotations

import httpx

from tests.conftest import ADMIN, TenantCreds


async def test_admin_endpoints_require_the_admin_token(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/admin/tenants", json={"name": "x"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_admin_token"
    r = await api.get("/v1/admin/tenants", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_create_tenant_and_key_shows_the_secret_once(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/admin/tenants", json={"name": "studio"}, headers=ADMIN)
    assert r.status_code == 201
    tenant = r.json()
    assert tenant["object"] == "tenant" and tenant["name"] == "studio"
    r = await api.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "ci"}, headers=ADMIN)
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith("fk_live_")
    assert created["key"].startswith(created["prefix"])
    r = await api.get(f"/v1/admin/tenants/{tenant['id']}/keys", headers=ADMIN)
    listed = r.json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]


async def test_revoked_key_is_refused(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    assert (await api.get("/v1/jobs", headers=tenant.headers)).status_code == 200
    keys = (await api.get(f"/v1/admin/tenants/{tenant.id}/keys", headers=ADMIN)).json()["data"]
    r = await api.post(f"/v1/admin/tenants/{tenant.id}/keys/{keys[0]['id']}/revoke", headers=ADMIN)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = await api.get("/v1/jobs", headers=tenant.headers)
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_api_key"


async def test_missing_key_is_a_problem(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/jobs")
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == "missing_api_key"
    assert body["request_id"] == r.headers["x-request-id"]


async def test_unknown_tenant_is_404(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/admin/tenants/00000000-0000-0000-0000-000000000000", headers=ADMIN)
    assert r.status_code == 404 and r.json()["code"] == "tenant_not_found"
