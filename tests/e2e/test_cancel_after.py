"""`Cancel-After` end to end: a job whose deadline passes before it runs at fal ends `aborted`
and costs nothing (the ledger, the budget and fal's own bill agree); one running is canceled
at fal and billed what fal bills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.db.engine import create_sessionmaker
from app.usage.reconcile import fetch_billing_events, reconcile
from tests.e2e.conftest import ADMIN
from tests.support.clips import Clip
from tests.support.waiting import eventually

ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


def kling(gw, clip: Clip) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"model": "kling-video-to-audio", "input": {"video_url": gw.video_url(clip)}}


def thinksound(gw, clip: Clip) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"model": "thinksound", "input": {"video_url": gw.video_url(clip)}}


def _cancels(gw) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [r for r in gw.emu.requests(method="PUT") if r["path"].endswith("/cancel")]


async def _types(gw, job_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["type"] for e in await gw.events(job_id)]


async def _reconciled(gw) -> Any:  # type: ignore[no-untyped-def]
    start = datetime.now(UTC) - timedelta(hours=1)
    end = datetime.now(UTC) + timedelta(hours=1)
    async with httpx.AsyncClient() as http:
        events = await fetch_billing_events(
            http, gw.settings.fal_platform_url, gw.emu.admin_key, start, end
        )
    async with create_sessionmaker(gw.engine)() as session:
        return await reconcile(session, events, start, end)


async def _budget(gw) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = await gw.client.get("/v1/me", headers=gw.headers)
    assert r.status_code == 200, r.text
    return r.json()["budget"]


async def test_cancel_after_while_queued_at_fal_aborts_the_job_at_no_cost(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway() as gw:
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}", json={"budget_usd": "10"}, headers=ADMIN_H
        )
        assert r.status_code == 200, r.text
        gw.emu.control(queue_wait=30)  # it waits in fal's queue past its deadline
        job = await gw.create(kling(gw, clips["bounce"]), **{"Cancel-After": "1500ms"})
        assert job["cancel_after_at"] is not None
        assert (await _budget(gw))["reserved_usd"] == "0.035000"
        done = await gw.wait(job["id"], timeout=20)
        assert done["status"] == "aborted"
        assert done["error"]["code"] == "aborted"
        assert len(_cancels(gw)) == 1  # canceled at fal, where it had not started
        assert (await _types(gw, job["id"]))[-2:] == ["job.cancel_requested", "job.aborted"]
        # Not billed: the ledger settled it at $0, the reservation is released, and fal's own
        # bill (its platform API) has nothing for it.
        ledger = await gw.sql("SELECT status, cost_micros, outcome FROM usage_records")
        assert [tuple(r) for r in ledger] == [("settled", 0, "canceled_queued")]
        budget = await _budget(gw)
        assert (budget["spent_usd"], budget["reserved_usd"]) == ("0.000000", "0.000000")
        report = await _reconciled(gw)
        assert report.ok, report.differences
        assert report.fal_total_micros == report.ledger_total_micros == 0


async def test_cancel_after_before_the_send_aborts_it_without_reaching_fal(
    gateway, clips: dict[str, Clip]
) -> None:
    # The account's one slot is taken: the job waits in the gateway past its deadline.
    async with gateway(fal_concurrency=1) as gw:
        gw.emu.control(queue_wait=30)
        blocker = await gw.create(kling(gw, clips["bounce"]))
        await gw.wait(blocker["id"], until=lambda j: j["status"] == "starting")
        job = await gw.create(kling(gw, clips["bounce"]), **{"Cancel-After": "1s"})
        done = await gw.wait(job["id"], timeout=20)
        assert done["status"] == "aborted"
        assert done["upstream"]["request_id"] is None
        assert await _types(gw, job["id"]) == ["job.created", "job.aborted"]
        assert len(gw.emu.submits()) == 1  # the blocker's only
        ledger = await gw.sql("SELECT count(*) FROM usage_records")
        assert ledger[0][0] == 1  # the blocker's only


async def test_cancel_after_once_running_cancels_it_at_fal(gateway, clips: dict[str, Clip]) -> None:
    async with gateway() as gw:
        gw.emu.control(run_time=8)
        job = await gw.create(thinksound(gw, clips["bounce"]), **{"Cancel-After": "3s"})
        await gw.wait(job["id"], until=lambda j: j["status"] == "processing", timeout=10)
        done = await gw.wait(job["id"], timeout=20)
        assert done["status"] == "canceled"
        assert done["error"]["upstream"]["status_code"] == 499
        assert len(_cancels(gw)) == 1
        # It ran: billed the compute seconds fal billed, as fal's bill says.
        await eventually(
            lambda: len(gw.emu.usage_records()) == 1, what="fal's bill of the canceled run"
        )
        report = await _reconciled(gw)
        assert report.ok, report.differences
        assert report.ledger_total_micros > 0


async def test_a_bad_cancel_after_is_refused_naming_the_header(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(workers=0) as gw:
        r = await gw.client.post(
            "/v1/jobs",
            json=kling(gw, clips["bounce"]),
            headers={**gw.headers, "Cancel-After": "soon"},
        )
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/problem+json")
        assert (r.json()["code"], r.json()["param"]) == ("invalid_header", "Cancel-After")
        assert (await gw.sql("SELECT count(*) FROM jobs"))[0][0] == 0
