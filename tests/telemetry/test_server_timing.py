"""Every API answer says how long the gateway took (Server-Timing), errors included."""

from __future__ import annotations

import re

import httpx

from tests.conftest import TenantCreds

TIMING = re.compile(r"^app;dur=\d+\.\d$")


async def test_every_answer_carries_the_gateways_time(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    api.app.add_api_route("/v1/_test/timing-boom", boom)  # type: ignore[attr-defined]
    answers = [
        await api.get("/healthz"),
        await api.get("/v1/models", headers=tenant.headers),
        await api.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=tenant.headers),
        await api.get("/v1/models"),  # 401
        await api.get("/v1/_test/timing-boom"),  # 500
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 401, 500]
    for r in answers:
        assert TIMING.match(r.headers["server-timing"]), r.headers.get("server-timing")
        assert r.headers["x-request-id"]
