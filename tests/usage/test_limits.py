"""Rate limits (IETF headers) and suspension."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from app.kit.clock import frozen_at
from tests.conftest import TenantCreds
from tests.usage.conftest import KLING, set_tenant


async def test_rate_limit_with_ietf_headers(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    await set_tenant(api, tenant, rate_limit_per_minute=2)
    with frozen_at(datetime(2031, 3, 1, 12, 0, 15, tzinfo=UTC)):
        a = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
    with frozen_at(datetime(2031, 3, 1, 12, 0, 30, 500_000, tzinfo=UTC)):
        b = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
        c = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
    assert a.status_code == b.status_code == 202
    assert a.headers["ratelimit-policy"] == '"jobs";q=2;w=60'
    # t: until the oldest creation counted leaves the sliding window (its second + 61 s)
    assert a.headers["ratelimit"] == '"jobs";r=1;t=61'
    assert b.headers["ratelimit"] == '"jobs";r=0;t=46'
    assert c.status_code == 429
    assert c.headers["retry-after"] == "46"
    assert c.json()["code"] == "rate_limited" and c.json()["retry_after_s"] == 46
    assert c.headers["ratelimit"] == '"jobs";r=0;t=46'
    # A new minute is no new window: a's creation still counts until 12:01:16.
    with frozen_at(datetime(2031, 3, 1, 12, 1, 0, tzinfo=UTC)):
        r = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
        assert r.status_code == 429 and r.headers["retry-after"] == "16"
    with frozen_at(datetime(2031, 3, 1, 12, 1, 16, tzinfo=UTC)):
        r = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
        assert r.status_code == 202
        assert r.headers["ratelimit"] == '"jobs";r=0;t=15'


async def test_suspended_tenant_cannot_create_but_can_read(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    job = (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).json()
    t = await set_tenant(api, tenant, suspended=True)
    assert t["suspended_at"] is not None
    r = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
    assert r.status_code == 403 and r.json()["code"] == "tenant_suspended"
    assert (await api.get(f"/v1/jobs/{job['id']}", headers=tenant.headers)).status_code == 200
    await set_tenant(api, tenant, suspended=False)
    assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202


async def test_tenant_patch_validation(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    from tests.conftest import ADMIN

    for body, param in [
        ({"budget_usd": "abc"}, "budget_usd"),
        ({"budget_period": "fortnight"}, "budget_period"),
        ({"weight": 0}, "weight"),
        ({"colour": 1}, "colour"),
    ]:
        r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json=body, headers=ADMIN)
        assert r.status_code == 422, body
        assert r.json()["param"] == param
