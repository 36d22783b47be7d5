"""The submit step: the preflight's record and the 'sending' mark, and what stops a send."""

from __future__ import annotations

from app.jobs import store
from app.jobs.steps import run_step
from tests.support.clips import Clip


async def _claim(gw, worker):  # type: ignore[no-untyped-def]
    return (
        await store.claim_dispatches(
            worker.driver,
            worker.owner,
            gw.settings.lease_duration,
            10,
            100,
            None,
            gw.settings.worker_stale_after,
        )
    ).jobs


async def test_a_checked_job_is_recorded_and_marked_sending_before_its_submit(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=False, workers=0) as gw:
        url = gw.video_url(clips["short"])
        created = await gw.create({"model": "thinksound", "input": {"video_url": url}})
        async with gw.make_worker(owner="w1") as worker:
            (job,) = await _claim(gw, worker)
            await run_step(worker.ctx, job)
        ((state, attempts, probe, submitted_at, estimate),) = await gw.sql(
            "SELECT submit_state, submit_attempts, input_probe, submitted_at, "
            "estimated_cost_micros FROM jobs WHERE id = :id",
            id=created["id"],
        )
        assert (state, attempts) == ("submitted", 1)
        assert probe["container"] == "mp4" and probe["size_bytes"] > 0
        assert abs(probe["duration_s"] - 2.0) < 0.1
        assert submitted_at is not None and estimate > 0
        assert len(gw.emu.submits()) == 1


async def test_a_job_canceled_or_taken_during_its_preflight_is_never_sent(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=False, workers=0) as gw:
        url = gw.video_url(clips["short"])
        body = {"model": "thinksound", "input": {"video_url": url}}
        canceled, taken = await gw.create(body), await gw.create(body)
        async with gw.make_worker(owner="w1") as worker:
            jobs = {str(j.id): j for j in await _claim(gw, worker)}
            assert set(jobs) == {canceled["id"], taken["id"]}
            # Both happen after the claim, while the step would be fetching the input.
            r = await gw.client.post(f"/v1/jobs/{canceled['id']}/cancel", headers=gw.headers)
            assert r.status_code == 200
            await gw.sql("UPDATE jobs SET lease_owner = 'w2' WHERE id = :id", id=taken["id"])
            for job in jobs.values():
                await run_step(worker.ctx, job)
        rows = await gw.sql(
            "SELECT id::text, status, submit_state, submit_attempts, input_probe, lease_owner "
            "FROM jobs ORDER BY created_at"
        )
        assert [tuple(r[1:4]) for r in rows] == [
            ("canceled", "pending", 0),
            ("queued", "pending", 0),
        ]
        assert [r[4] for r in rows] == [None, None]  # not even the probe is recorded
        assert rows[1][5] == "w2"  # the other worker's lease is left alone
        assert gw.emu.submits() == []
