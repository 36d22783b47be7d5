"""GET /v1/me: the key's tenant, limits, budget, scope and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import ADMIN, TenantCreds


async def test_me_without_a_budget_or_limits(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    r = await api.get("/v1/me", headers=tenant.headers)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["object"] == "me"
    assert me["tenant"] == {"id": tenant.id, "name": "acme", "suspended": False}
    assert me["limits"] == {"rate_limit_per_minute": None, "max_in_flight": None, "weight": 1.0}
    assert me["budget"] is None
    assert me["key"]["scope"] == "read_write" and me["key"]["expires_at"] is None
    assert tenant.key.startswith(me["key"]["prefix"])


async def test_me_shows_the_limits_the_budget_and_the_keys_scope(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.patch(
        f"/v1/admin/tenants/{tenant.id}",
        json={
            "budget_usd": "25",
            "budget_period": "month",
            "rate_limit_per_minute": 120,
            "max_in_flight": 4,
        },
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    expires = datetime.now(UTC) + timedelta(days=3)
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys",
        json={"read_only": True, "expires_at": expires.isoformat()},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    key = r.json()
    me = (await api.get("/v1/me", headers={"Authorization": f"Bearer {key['key']}"})).json()
    assert me["limits"] == {"rate_limit_per_minute": 120, "max_in_flight": 4, "weight": 1.0}
    now = datetime.now(UTC)
    budget = me["budget"]
    assert budget["budget_usd"] == "25.000000" and budget["period"] == "month"
    assert (budget["spent_usd"], budget["reserved_usd"], budget["remaining_usd"]) == (
        "0.000000",
        "0.000000",
        "25.000000",
    )
    start = datetime.fromisoformat(budget["period_start"])
    resets = datetime.fromisoformat(budget["resets_at"])
    assert start <= now < resets and (start.day, resets.day) == (1, 1)
    assert me["key"]["id"] == key["id"] and me["key"]["scope"] == "read_only"
    assert datetime.fromisoformat(me["key"]["expires_at"]) == expires.replace(
        microsecond=expires.microsecond
    )


async def test_me_needs_a_key(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/me")
    assert r.status_code == 401
    assert r.json()["code"] == "missing_api_key"
