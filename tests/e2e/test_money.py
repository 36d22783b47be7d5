"""Money end to end: the ledger against the emulator's bill, budgets under concurrency,
exactly-once settlement through duplicate webhooks, races and crashes."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections import Counter
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from app.config import AmbiguousSubmitPolicy
from app.usage import ledger
from tests.e2e.conftest import ADMIN
from tests.support.clips import Clip
from tests.support.waiting import eventually

ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


def kling(gw, clip: Clip) -> dict:  # type: ignore[no-untyped-def]
    return {"model": "kling-video-to-audio", "input": {"video_url": gw.video_url(clip)}}


async def _ledger(gw) -> list[tuple]:  # type: ignore[no-untyped-def]
    return await gw.sql(
        "SELECT upstream_request_id, status, cost_micros, orphan, outcome, cost_nanos "
        "FROM usage_records "
        "ORDER BY created_at"
    )


def _micros(usd: float) -> int:
    return int((Decimal(str(usd)) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _nanos(usd: float) -> int:
    """fal's exact cost of a request (the emulator's billing event: cost_estimate_nano_usd)."""
    return round(usd * 1e9)


async def test_ledger_equals_the_emulators_bill_for_a_mixed_run(gateway, clips) -> None:
    # fal's platform API refuses the (non-admin) key: an ambiguous submit stays ambiguous, so the
    # retry policy resubmits it and the first request's late webhook makes an orphan. (With the
    # API, fal finds the first request and nothing is resubmitted: test_failures.py.)
    async with gateway(
        public=True,
        webhook_grace=timedelta(seconds=1),
        ambiguous_submit_grace=timedelta(seconds=1),
        ambiguous_submit_policy=AmbiguousSubmitPolicy.retry,
        fal_admin_key=None,
    ) as gw:
        url = gw.video_url(clips["bounce"])
        jobs = []
        # success (per video and per compute second)
        jobs.append(await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}}))
        jobs.append(await gw.create({"model": "thinksound", "input": {"video_url": url}}))
        for j in jobs:
            await gw.wait(j["id"], timeout=60)
        # a 422 after fal accepted (a model-side refusal)
        gw.emu.control(failure_rates={"content_policy_violation": 1.0})
        j422 = await gw.create({"model": "thinksound", "input": {"video_url": url}})
        assert (await gw.wait(j422["id"]))["error"]["code"] == "upstream_validation"
        gw.emu.control(failure_rates={})
        # a 5xx
        gw.emu.control(failure_rates={"runner_server_error": 1.0})
        j5 = await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}})
        assert (await gw.wait(j5["id"]))["status"] == "failed"
        gw.emu.control(failure_rates={})
        # a cancel while queued at fal
        gw.emu.control(concurrency=1, run_time=3)
        blocker = await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}})
        # The blocker holds fal's one slot first, so the next one waits in fal's queue.
        await gw.wait(blocker["id"], until=lambda j: j["status"] == "processing")
        queued = await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}})
        await gw.wait(queued["id"], until=lambda j: j["status"] == "starting")
        await gw.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=gw.headers)
        assert (await gw.wait(queued["id"]))["status"] == "canceled"
        await gw.wait(blocker["id"], timeout=30)
        gw.emu.control(concurrency=4, run_time=0)
        # an ambiguous submit, retried once; the first request's webhook arrives late: an orphan
        gw.emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.2, webhook_delay=4)
        before = len(gw.emu.submits())
        amb = await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}})
        await gw.wait(amb["id"], until=lambda j: len(gw.emu.submits()) > before, timeout=30)
        gw.emu.control(ambiguous_submit_rate=0.0)  # the retry (after the 1 s grace) gets through
        done = await gw.wait(amb["id"], timeout=30)
        assert done["status"] == "succeeded"

        bill = gw.emu.usage_records()
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # the orphan's late webhook
            ours = await _ledger(gw)
            if len(ours) == len(bill) and all(r[1] == "settled" for r in ours):
                break
            if asyncio.get_running_loop().time() > deadline:
                events = await gw.sql("SELECT request_id, state, job_id FROM fal_webhook_events")
                pytest.fail(
                    f"events {events} "
                    f"ledger {[(r[0][:8], r[1], r[2], r[3]) for r in ours]} != bill "
                    f"{[(r['request_id'][:8], r['cost'], r['reason']) for r in bill]}"
                )
            await asyncio.sleep(0.2)  # between looks, up to the deadline
        fal = {r["request_id"]: _micros(r["cost"]) for r in bill}
        mine = {r[0]: r[2] for r in ours}
        assert mine == fal
        assert sum(mine.values()) == sum(fal.values()) > 0
        assert [r for r in ours if r[3]] and all(r[4] == "succeeded" for r in ours if r[3])
        # The tenant sees it in its usage and its export.
        summary = (await gw.client.get("/v1/usage?group_by=model", headers=gw.headers)).json()
        total = sum(Decimal(g["cost_usd"]) for g in summary["data"])
        # Exact: each request at fal's precision, the total rounded once from fal's own sum.
        assert {r[0]: r[5] for r in ours} == {r["request_id"]: _nanos(r["cost"]) for r in bill}
        fal_total = Decimal(sum(_nanos(r["cost"]) for r in bill)) / 10**9
        assert (
            total
            == Decimal(summary["total_cost_usd"])
            == fal_total.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
        )
        export = (await gw.client.get("/v1/usage/export.csv", headers=gw.headers)).text
        rows = list(csv.DictReader(io.StringIO(export)))
        assert {r["request_id"] for r in rows} == set(mine)


async def test_budget_holds_under_50_concurrent_creates(gateway, clips) -> None:
    async with gateway(public=True, workers=0) as gw:
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}", json={"budget_usd": "0.35"}, headers=ADMIN_H
        )
        assert r.status_code == 200
        body = {"model": "kling-video-to-audio", "input": {"video_url": "https://x.example/a.mp4"}}

        async def create() -> int:
            r = await gw.client.post("/v1/jobs", json=body, headers=gw.headers)
            return r.status_code

        codes = await asyncio.gather(*(create() for _ in range(50)))
        assert codes.count(202) == 10 and codes.count(402) == 40
        spent, reserved = (
            await gw.sql("SELECT spent_micros, reserved_micros FROM budget_periods")
        )[0]
        assert spent + reserved == 350_000
        assert (await gw.sql("SELECT count(*) FROM jobs"))[0][0] == 10


async def test_settled_exactly_once_under_duplicate_webhooks_and_polling(gateway, clips) -> None:
    # Webhooks duplicated, and polling racing them (a tiny grace): one record, one settlement.
    async with gateway(
        public=True,
        webhook_grace=timedelta(seconds=0.05),
        poll_interval_min=timedelta(seconds=0.05),
        workers=2,
    ) as gw:
        gw.emu.control(webhook_duplicate_rate=1.0, run_time=0.5)
        url = gw.video_url(clips["bounce"])
        jobs = [
            await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}})
            for _ in range(4)
        ]
        done = [await gw.wait(j["id"]) for j in jobs]
        assert {d["status"] for d in done} == {"succeeded"}
        request_ids = {d["upstream"]["request_id"] for d in done}

        def duplicates_answered() -> bool:
            # fal has its answer only once the delivery is committed (app.db.session): every
            # duplicate has then had whatever effect it would have.
            delivered = Counter(
                a["request_id"] for a in gw.emu.webhooks() if a["outcome"] == "delivered"
            )
            return all(delivered[r] == 2 for r in request_ids)

        await eventually(duplicates_answered, what="both deliveries of every webhook answered")
        ours = await _ledger(gw)
        assert len(ours) == 4 and {r[2] for r in ours} == {35_000}
        daily = await gw.sql("SELECT sum(requests), sum(cost_micros) FROM usage_daily")
        assert daily == [(4, 140_000)]


async def test_worker_killed_between_completion_and_settlement(
    gateway, clips, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(public=False) as gw:
        real = ledger.settle_job
        crashes = {"n": 0}

        async def crash_once(*args, **kwargs):  # type: ignore[no-untyped-def]
            if crashes["n"] == 0:
                crashes["n"] += 1
                raise RuntimeError("worker died mid-settlement")
            return await real(*args, **kwargs)

        monkeypatch.setattr(ledger, "settle_job", crash_once)
        job = await gw.create(kling(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=30)
        assert crashes["n"] == 1  # the first attempt died; its transaction rolled back whole
        assert done["status"] == "succeeded" and done["usage"]["status"] == "settled"
        assert done["usage"]["cost_usd"] == "0.035000"
        assert len(await _ledger(gw)) == 1
        assert len(gw.emu.submits()) == 1
        files = await gw.sql("SELECT count(*) FROM files WHERE job_id = :j", j=uuid.UUID(job["id"]))
        assert files == [(2,)]


async def test_rate_limit_and_idempotency_never_deadlock_a_full_pool(gateway) -> None:
    # More concurrent creates than the API has connections (2 + 2 overflow), each needing the
    # rate-limit counter and an idempotency claim besides its own transaction.
    async with gateway(
        public=True,
        workers=0,
        own_pool=True,
        db_pool_size=2,
        rate_limit_per_minute=1000,
        auth_cache_ttl=0,
        key_touch_interval=0,
    ) as gw:
        body = {"model": "kling-video-to-audio", "input": {"video_url": "https://x.example/a.mp4"}}

        async def create(i: int) -> int:
            r = await gw.client.post(
                "/v1/jobs", json=body, headers={**gw.headers, "Idempotency-Key": f"k{i}"}
            )
            return r.status_code

        codes = await asyncio.wait_for(asyncio.gather(*(create(i) for i in range(40))), 60)
        assert codes == [202] * 40
        assert (await gw.sql("SELECT count(*) FROM jobs"))[0][0] == 40


async def test_a_runner_422_is_billed_as_fal_bills_it(gateway, clips) -> None:
    # One rule for the compute a model spent before its 422, the same in the ledger and in fal's
    # bill (the emulator's, by default): its compute seconds, flagged.
    async with gateway(public=False) as gw:
        gw.emu.control(run_time=1.0, failure_rates={"content_policy_violation": 1.0})
        job = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"], timeout=30)
        assert done["error"]["code"] == "upstream_validation", done
        rid = done["upstream"]["request_id"]
        (billed,) = [u for u in gw.emu.usage_records() if u["request_id"] == rid]
        assert billed["billed"] and billed["unit_quantity"] > 0, billed
        assert done["usage"]["status"] == "settled"
        assert float(done["usage"]["units"]) == pytest.approx(billed["unit_quantity"])
        assert _nanos(billed["cost"]) == await _cost_of(gw, rid)


async def _cost_of(gw, request_id: str) -> int:  # type: ignore[no-untyped-def]
    """The ledger's exact cost of a request (nano-dollars)."""
    ((cost, flagged),) = await gw.sql(
        "SELECT cost_nanos, flagged FROM usage_records WHERE upstream_request_id = :r",
        r=request_id,
    )
    assert flagged  # a 422 that cost money is always flagged for a look
    return int(cost)
