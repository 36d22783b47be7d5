"""Problem answers of the framework's own errors (app.kit.problems)."""

from __future__ import annotations

import httpx

from tests.conftest import TenantCreds


async def test_405_lists_every_method_of_the_path(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    # GET and POST /v1/jobs are two routes: Starlette's 405 listed the first one's only
    r = await api.request("DELETE", "/v1/jobs", headers=tenant.headers)
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "method_not_allowed"
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}
