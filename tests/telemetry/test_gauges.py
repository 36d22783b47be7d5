"""The database's gauges at the API's /metrics: read at a scrape, at most once per interval."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from tests.conftest import ADMIN, TenantCreds, make_tenant
from tests.support.metrics import sample

KLING = {"model": "kling-video-to-audio", "input": {"video_url": "https://media.example/a.mp4"}}
KLING_ID = "fal-ai/kling-video/video-to-audio"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_refresh_interval": timedelta(0)})


async def test_jobs_queue_and_budgets_as_the_database_has_them(
    api: httpx.AsyncClient, tenant: TenantCreds, other_tenant: TenantCreds
) -> None:
    r = await api.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"budget_usd": "1.00"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert await sample(api, "foley_queue_depth") == 0
    for _ in range(2):
        assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202
    assert (await api.post("/v1/jobs", json=KLING, headers=other_tenant.headers)).is_success
    assert await sample(api, "foley_queue_depth") == 3
    assert await sample(api, "foley_jobs", model=KLING_ID, status="queued") == 3
    assert await sample(api, "foley_jobs", model=KLING_ID, status="processing") == 0
    assert await sample(api, "foley_queue_oldest_age_seconds") >= 0
    assert await sample(api, "foley_fal_slots_in_use") == 0
    mine = {"tenant_id": tenant.id}
    assert await sample(api, "foley_tenant_budget_usd", **mine) == 1.0
    assert await sample(api, "foley_tenant_budget_reserved_usd", **mine) == pytest.approx(0.07)
    assert await sample(api, "foley_tenant_budget_remaining_usd", **mine) == pytest.approx(0.93)
    # A tenant without a budget has no budget series: per-tenant series are bounded by tenants.
    response = await api.get("/metrics")
    # A model with no live job shows 0, not a missing series.
    assert 'foley_jobs{model="fal-ai/thinksound",status="queued"} 0.0' in response.text
    assert f'tenant_id="{other_tenant.id}"' not in response.text


async def test_scrapes_within_the_interval_read_the_database_once(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    # An hour's interval (read at the first scrape): the second scrape is answered from the
    # first one's reading, however many jobs were created in between.
    settings.metrics_refresh_interval = timedelta(hours=1)
    tenant = await make_tenant(api, "late")
    assert await sample(api, "foley_queue_depth") == 0
    assert (await api.post("/v1/jobs", json=KLING, headers=tenant.headers)).status_code == 202
    assert await sample(api, "foley_queue_depth") == 0


async def test_with_a_metrics_token_only_its_bearer_is_answered(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    settings.metrics_token = SecretStr("metrics-" + "x" * 24)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {'x' * 8}"}):
        r = await api.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_metrics_token"
        assert "foley_" not in r.text
    r = await api.get("/metrics", headers={"Authorization": f"Bearer metrics-{'x' * 24}"})
    assert r.status_code == 200
    assert "foley_queue_depth" in r.text
