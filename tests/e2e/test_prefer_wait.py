"""`Prefer: wait[=N]` (RFC 7240) on POST /v1/jobs and GET /v1/jobs/{id}: the answer waits for
the job's end, at most N seconds, and says what it applied; a held request holds nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.clips import Clip
from tests.support.waiting import eventually


def kling(gw, clip: Clip) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"model": "kling-video-to-audio", "input": {"video_url": gw.video_url(clip)}}


async def test_create_with_prefer_wait_answers_the_finished_job(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway() as gw:
        r = await gw.client.post(
            "/v1/jobs", json=kling(gw, clips["bounce"]), headers={**gw.headers, "Prefer": "wait=30"}
        )
        assert r.status_code == 201, r.text
        assert r.headers["preference-applied"] == "wait=30"
        job = r.json()
        assert job["status"] == "succeeded"
        assert job["result"]["audio"]["url"]
        assert job == await gw.get(job["id"])


async def test_get_with_prefer_wait_answers_the_job_as_it_stands_when_the_wait_ends(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway() as gw:
        gw.emu.control(queue_wait=30)
        job = await gw.create(kling(gw, clips["bounce"]))
        started = time.monotonic()
        r = await gw.client.get(
            f"/v1/jobs/{job['id']}", headers={**gw.headers, "Prefer": "respond-async, wait=1"}
        )
        assert time.monotonic() - started >= 1.0
        assert r.status_code == 200
        assert r.headers["preference-applied"] == "wait=1"
        assert r.json()["status"] in {"queued", "starting"}
        # No wait asked, none applied.
        r = await gw.client.get(f"/v1/jobs/{job['id']}", headers=gw.headers)
        assert "preference-applied" not in r.headers


async def test_a_held_get_answers_when_the_job_ends(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(workers=0) as gw:
        job = await gw.create(kling(gw, clips["bounce"]))
        hub = gw.app.state.hub  # type: ignore[union-attr]
        held = asyncio.create_task(
            gw.client.get(f"/v1/jobs/{job['id']}", headers={**gw.headers, "Prefer": "wait"})
        )
        await eventually(lambda: hub.waiting == 1, what="the request held")
        # Held, it holds no database connection in a transaction.
        idle = await gw.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle in transaction'"
        )
        assert idle[0][0] == 0
        cancel = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
        assert cancel.status_code == 200
        r = await asyncio.wait_for(held, 10)
        assert r.headers["preference-applied"] == "wait=60"
        assert r.json()["status"] == "canceled"
        assert hub.waiting == 0


async def test_a_client_that_hangs_up_frees_its_wait(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(workers=0) as gw:
        job = await gw.create(kling(gw, clips["bounce"]))
        hub = gw.app.state.hub  # type: ignore[union-attr]
        held = asyncio.create_task(
            gw.client.get(f"/v1/jobs/{job['id']}", headers={**gw.headers, "Prefer": "wait=60"})
        )
        await eventually(lambda: hub.waiting == 1, what="the request held")
        held.cancel()  # the client closes its connection
        await eventually(lambda: hub.waiting == 0, what="the wait freed")


async def test_another_tenants_job_cannot_be_waited_on(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(workers=0) as gw:
        job = await gw.create(kling(gw, clips["bounce"]))
        _, other_key = await gw.new_tenant("other")
        r = await gw.client.get(
            f"/v1/jobs/{job['id']}",
            headers={"Authorization": f"Bearer {other_key}", "Prefer": "wait=5"},
        )
        assert r.status_code == 404
        assert r.json()["code"] == "job_not_found"
        assert gw.app.state.hub.waiting == 0  # type: ignore[union-attr]
