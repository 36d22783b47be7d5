"""Workers: many at once, one killed mid-dispatch, and the fal account's concurrency cap."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from app.jobs import lifecycle
from app.worker.runner import ENDED, EVERYTHING, Wakeup
from tests.support import notify
from tests.support.clips import Clip
from tests.support.waiting import eventually


async def test_two_workers_never_claim_one_job(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True, workers=2, worker_concurrency=4) as gw:
        url = gw.video_url(clips["bounce"])
        jobs = [
            await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
            for _ in range(12)
        ]
        done = [await gw.wait(j["id"], timeout=90) for j in jobs]
        assert {d["status"] for d in done} == {"succeeded"}
        submits = gw.emu.submits()
        assert len(submits) == 12  # one upstream request per job, none twice
        request_ids = Counter(d["upstream"]["request_id"] for d in done)
        assert len(request_ids) == 12
        assert all(w.steps_run > 0 for w in gw.workers), "both workers took part"


async def test_a_job_is_polled_when_due_not_at_the_idle_interval(
    gateway, clips: dict[str, Clip]
) -> None:
    # No webhooks and no NOTIFY after the submit: only the worker's own note of when the job is
    # due brings it back before the (here very long) idle interval. The wait's deadline is well
    # inside that interval, so a job that only the idle poll finished fails it.
    async with gateway(
        public=False,
        worker_poll_interval=timedelta(seconds=60),
        poll_interval_min=timedelta(seconds=0.3),
        poll_interval_max=timedelta(seconds=0.3),
    ) as gw:
        gw.emu.control(run_time=1)
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        done = await gw.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded"
        polls = gw.emu.requests(method="GET", request_id=done["upstream"]["request_id"])
        assert len([r for r in polls if r["path"].endswith("/status")]) >= 2


async def test_fal_concurrency_cap_holds_across_workers(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=False, workers=2, fal_concurrency=2) as gw:
        gw.emu.control(concurrency=10, run_time=1)
        url = gw.video_url(clips["bounce"])
        jobs = [
            await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
            for _ in range(6)
        ]
        peak = 0

        async def all_succeeded() -> bool:
            nonlocal peak  # what fal holds at once, sampled while the jobs run
            counters = gw.emu.state()["requests"]
            peak = max(peak, counters["running"] + counters["queued"])
            return {(await gw.get(j["id"]))["status"] for j in jobs} == {"succeeded"}

        await eventually(all_succeeded, timeout=60, what="every job to succeed")
        assert peak == 2, f"fal saw {peak} requests at once with a cap of 2"


def _worker_process(gw, lease: timedelta, log: Path, **more: str) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    """A worker as operators run it: its own process, to be SIGKILLed (``more``: settings)."""
    s = gw.settings
    env = {
        **os.environ,
        "FOLEY_ENV": "test",
        "FOLEY_DATA_DIR": str(s.data_dir),
        "FOLEY_DATABASE_URL": s.database_url or "",
        "FOLEY_PUBLIC_URL": s.public_url or "",
        "FOLEY_LEASE_DURATION": str(lease.total_seconds()),
        "FOLEY_FAL_QUEUE_URL": s.fal_queue_url,
        "FOLEY_FAL_REST_URL": s.fal_rest_url,
        "FOLEY_FAL_CDN_URL": s.fal_cdn_url,
        "FAL_KEY": s.fal_key.get_secret_value() if s.fal_key else "",
        "FOLEY_WORKER_POLL_INTERVAL": "0.2",
        **more,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.entrypoints", "worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def _job_on_a_killed_worker(  # type: ignore[no-untyped-def]
    gw, video_url: str, lease: timedelta, log: Path, ready
) -> dict:
    """A ThinkSound job sent by a worker process, SIGKILLed once ``ready()``: fal receives the
    request and runs it but holds the answer to the submit (30 s), so the worker is still
    mid-dispatch, holding the job's lease, when it dies."""
    gw.emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=30)
    worker = _worker_process(gw, lease, log)
    try:
        job = await gw.create({"model": "thinksound", "input": {"video_url": video_url}})
        await eventually(ready, timeout=30, what="the moment to kill the worker")
        assert len(gw.emu.submits()) == 1, log.read_text()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    return job


async def _finished_by(gw, job_id: str, owner: str, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    gw.emu.control(ambiguous_submit_rate=0.0)
    worker = gw.make_worker(owner=owner)
    task = asyncio.create_task(worker.run(shutdown_grace_s=5))
    try:
        return await gw.wait(job_id, timeout=timeout)
    finally:
        worker.stop()
        await task


async def test_worker_killed_mid_dispatch_loses_nothing_and_sends_once(
    gateway, clips: dict[str, Clip], tmp_path
) -> None:
    lease = timedelta(seconds=2)
    async with gateway(
        public=True, workers=0, lease_duration=lease, ambiguous_submit_grace=timedelta(seconds=30)
    ) as gw:
        # Killed as soon as the submit reached fal: the answer is still in the air.
        job = await _job_on_a_killed_worker(
            gw, gw.video_url(clips["bounce"]), lease, tmp_path / "worker.log", gw.emu.submits
        )
        rows = await gw.sql("SELECT submit_state, lease_owner IS NOT NULL FROM jobs")
        assert rows == [("sending", True)]
        # A new worker takes over once the dead one's lease expires.
        done = await _finished_by(gw, job["id"], "survivor", timeout=40)
        assert done["status"] == "succeeded", done
        assert len(gw.emu.submits()) == 1  # the webhook named the job: never sent again
        assert done["upstream"]["request_id"] == gw.emu.submits()[0]["request_id"]


async def _listening_since(gw, since: datetime) -> bool:  # type: ignore[no-untyped-def]
    """A LISTEN issued since ``since`` is in place: a NOTIFY sent from now on is heard."""
    rows = await gw.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle' AND query LIKE 'LISTEN %' AND query_start >= :since",
        since=since,
    )
    return bool(rows[0][0])


async def test_a_wake_up_claims_only_where_its_reason_can_have_made_jobs_due(
    gateway, clips: dict[str, Clip]
) -> None:
    # The API's NOTIFY after an accept can only have made queued jobs due: the worker claims
    # those alone, and leaves a due follow-up to a wake-up that concerns it (a cancel's) or its
    # polling. A reason it does not know claims everywhere.
    async with gateway(public=False, workers=0, worker_poll_interval=timedelta(seconds=60)) as gw:
        url = gw.video_url(clips["bounce"])
        submitted = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        await gw.sql(
            "UPDATE jobs SET status = 'starting', submit_state = 'submitted', "
            "next_action_at = now() - interval '1 second' WHERE id = :id",
            id=submitted["id"],
        )
        queued = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        worker = gw.make_worker(owner="w")
        (since,) = (await gw.sql("SELECT clock_timestamp()"))[0]
        listening = asyncio.create_task(worker.listen())
        try:
            await eventually(lambda: _listening_since(gw, since), what="the worker's LISTEN")
            # First, and on its own: nothing else can have asked for a full claim yet, so none
            # can hide a wrong answer.
            # fal's webhook: the job's result is due, and the place it held at fal is free.
            await gw.sql("SELECT pg_notify('foley_jobs', 'webhook')")
            where = await asyncio.wait_for(worker.next_wakeup(), 5)
            assert where == Wakeup(queued=False, room=True, follow_ups=True)
            await gw.sql("SELECT pg_notify('foley_jobs', 'job')")
            where = await asyncio.wait_for(worker.next_wakeup(), 5)
            assert where == Wakeup(queued=True, room=False, follow_ups=False)
            assert not await worker.claim(where)
            assert [str(i) for i in worker.running] == [queued["id"]]
            await gw.sql("SELECT pg_notify('foley_jobs', 'cancel')")
            where = await asyncio.wait_for(worker.next_wakeup(), 5)
            assert where == Wakeup(queued=False, room=False, follow_ups=True)
            await worker.claim(where)
            assert submitted["id"] in {str(i) for i in worker.running}
            await gw.sql("SELECT pg_notify('foley_jobs', 'something_new')")
            assert await asyncio.wait_for(worker.next_wakeup(), 5) == EVERYTHING
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            await eventually(lambda: not worker.running, timeout=30, what="the steps to end")


async def test_a_freed_place_at_fal_is_claimed_only_when_a_queued_job_waits_for_one(
    gateway, clips: dict[str, Clip]
) -> None:
    # One place at fal. The second job's claim leaves it waiting; the first job's end (a place
    # freed) then claims it. With nothing left waiting, a freed place claims nothing: the
    # dispatch claim, which every worker's waits on, is not made for nothing.
    async with gateway(
        public=False, workers=0, fal_concurrency=1, worker_poll_interval=timedelta(seconds=60)
    ) as gw:
        url = gw.video_url(clips["bounce"])
        worker = gw.make_worker(owner="w")
        body = {"model": "thinksound-audio", "input": {"video_url": url}}
        first = await gw.create(body)
        await gw.sql(  # at fal, holding the one place
            "UPDATE jobs SET status = 'starting', submit_state = 'submitted', "
            "next_action_at = now() + interval '1 hour' WHERE id = :id",
            id=first["id"],
        )
        second = await gw.create(body)
        assert not await worker.claim(Wakeup(queued=True, room=False, follow_ups=False))
        assert not worker.running  # held back by the account's concurrency
        await gw.sql("UPDATE jobs SET status = 'failed' WHERE id = :id", id=first["id"])
        await worker.claim(ENDED)
        assert [str(i) for i in worker.running] == [second["id"]]
        await eventually(lambda: not worker.running, timeout=30, what="the step to end")
        await gw.sql("UPDATE jobs SET status = 'failed' WHERE id = :id", id=second["id"])
        third = await gw.create(body)  # queued with no wake-up this worker heard
        assert not await worker.claim(ENDED)
        assert not worker.running
        await worker.claim(Wakeup(queued=True, room=False, follow_ups=False))
        assert [str(i) for i in worker.running] == [third["id"]]
        await eventually(lambda: not worker.running, timeout=30, what="the step to end")


async def test_a_workers_own_wake_ups_reach_it_directly_and_name_it_to_the_others(
    gateway, clips: dict[str, Clip]
) -> None:
    # A transition written by the worker's store wakes that worker without a round trip through
    # Postgres; its NOTIFY, which every other worker still hears, names the worker, which leaves
    # it alone (before, each of its own wake-ups cost it a second claim).
    async with gateway(public=False, workers=0, worker_poll_interval=timedelta(seconds=60)) as gw:
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        await gw.sql(
            "UPDATE jobs SET status = 'starting', submit_state = 'submitted', "
            "upstream_request_id = 'req-1' WHERE id = :id",
            id=job["id"],
        )
        worker = gw.make_worker(owner="w")
        async with notify.listening(gw.engine) as heard:
            # fal's run seen complete on its status stream (the watcher's write, no lease). The
            # worker is not listening: only its store can wake it, and does, where a completion
            # can have made jobs due.
            done = lifecycle.UpstreamCompleted(1.5, [])
            assert await worker.store.observe(uuid.UUID(job["id"]), done) is not None
            where = await asyncio.wait_for(worker.next_wakeup(), 5)
            assert where == Wakeup(queued=False, room=True, follow_ups=True)
            assert await asyncio.wait_for(heard.get(), 5) == "completed@w"
            (since,) = (await gw.sql("SELECT clock_timestamp()"))[0]
            worker_listening = asyncio.create_task(worker.listen())
            try:
                await eventually(lambda: _listening_since(gw, since), what="the worker's LISTEN")
                # Its own NOTIFY, then another worker's: only the other's wakes it (a cancel's,
                # which claims follow-ups alone, so hearing its own 'job' too would show).
                await gw.sql("SELECT pg_notify('foley_jobs', 'job@w')")
                await gw.sql("SELECT pg_notify('foley_jobs', 'cancel@another')")
                where = await asyncio.wait_for(worker.next_wakeup(), 5)
                assert where == Wakeup(queued=False, room=False, follow_ups=True)
            finally:
                worker_listening.cancel()
                await asyncio.gather(worker_listening, return_exceptions=True)


async def test_a_lost_listen_connection_is_back_at_once_and_the_worker_claims(
    gateway, clips: dict[str, Clip]
) -> None:
    # A Postgres restart (here: its backend ended by the server) closes the LISTEN connection:
    # the worker notices at once (not at its next ping, 15 s away), connects again, and claims,
    # since NOTIFYs sent meanwhile were lost.
    async with gateway(public=False, workers=0, worker_poll_interval=timedelta(seconds=60)) as gw:
        worker = gw.make_worker(owner="w")
        (since,) = (await gw.sql("SELECT clock_timestamp()"))[0]
        listening = asyncio.create_task(worker.listen())
        try:
            await eventually(lambda: _listening_since(gw, since), what="the worker's LISTEN")
            (since,) = (await gw.sql("SELECT clock_timestamp()"))[0]
            await gw.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
            wakeup = await asyncio.wait_for(worker.next_wakeup(), 10)
            assert wakeup == EVERYTHING  # a full claim: anything may have become due
            await eventually(lambda: _listening_since(gw, since), what="LISTEN again")
            await gw.sql("SELECT pg_notify('foley_jobs', 'job')")
            wakeup = await asyncio.wait_for(worker.next_wakeup(), 5)
            assert wakeup == Wakeup(queued=True, room=False, follow_ups=False)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)


async def test_a_cancel_reaches_a_running_job_without_waiting_for_a_poll(
    gateway, clips: dict[str, Clip]
) -> None:
    # Nothing brings the job back for a minute (no poll, no webhook yet, the status stream's
    # safety-net look a minute away too) but the cancel's NOTIFY.
    async with gateway(
        public=True,
        worker_poll_interval=timedelta(seconds=60),
        webhook_grace=timedelta(seconds=60),
        poll_interval_max=timedelta(seconds=60),
    ) as gw:
        gw.emu.control(run_time=30)
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        await gw.wait(job["id"], until=lambda j: j["status"] in ("starting", "processing"))

        async def put_off() -> bool:
            rows = await gw.sql(
                "SELECT lease_owner IS NULL AND next_action_at > now() + interval '30 seconds' "
                "FROM jobs WHERE id = :id",
                id=job["id"],
            )
            return bool(rows[0][0])

        await eventually(put_off, timeout=10, what="the submit's follow-up a minute away")
        r = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
        assert r.status_code == 200, r.text
        # Well before the poll, the follow-up or fal's end of the run (30 s) could do it.
        done = await gw.wait(job["id"], timeout=20)
        assert done["status"] == "canceled"
        cancels = [r for r in gw.emu.requests(method="PUT") if r["path"].endswith("/cancel")]
        assert len(cancels) == 1


async def test_a_stream_of_new_job_wake_ups_does_not_put_off_polling(
    gateway, clips: dict[str, Clip]
) -> None:
    # A follow-up that became due without a NOTIFY (as when another worker died holding it) is
    # found by the poll, even while wake-ups for new jobs keep coming faster than the interval.
    async with gateway(public=False, workers=0, worker_poll_interval=timedelta(seconds=0.5)) as gw:
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        await gw.sql(
            "UPDATE jobs SET status = 'starting', submit_state = 'submitted', "
            "next_action_at = now() + interval '1 hour' WHERE id = :id",
            id=job["id"],
        )
        worker = gw.make_worker(owner="w")
        running = asyncio.create_task(worker.run(shutdown_grace_s=1))
        try:
            # Made due only once the worker has looked (and found nothing): its first claim
            # must not be what finds it.
            await eventually(lambda: worker.follow_up_claims, what="the worker's first claim")
            await gw.sql("UPDATE jobs SET next_action_at = now() WHERE id = :id", id=job["id"])

            async def claimed_amid_new_job_wake_ups() -> bool:
                await gw.sql("SELECT pg_notify('foley_jobs', 'job')")
                return worker.steps_run > 0

            # Wake-ups every 0.1 s, five to a poll interval; a few intervals to find it.
            await eventually(claimed_amid_new_job_wake_ups, timeout=3, interval=0.1)
            assert worker.steps_run == 1
        finally:
            worker.stop()
            await running


async def test_a_dead_workers_completed_job_is_taken_over_within_seconds(
    gateway, clips: dict[str, Clip], tmp_path
) -> None:
    lease = timedelta(seconds=60)
    async with gateway(
        public=True, workers=0, lease_duration=lease, ambiguous_submit_grace=timedelta(seconds=60)
    ) as gw:

        async def completed_under_the_lease() -> bool:
            # fal's webhook, naming the job, is stored while the worker (beating) holds it.
            rows = await gw.sql(
                "SELECT j.upstream_completed AND j.lease_expires_at > now() "
                "AND b.beat_at IS NOT NULL FROM jobs j "
                "LEFT JOIN worker_beats b ON b.owner = j.lease_owner"
            )
            return bool(rows and rows[0][0])

        job = await _job_on_a_killed_worker(
            gw,
            gw.video_url(clips["bounce"]),
            lease,
            tmp_path / "worker.log",
            completed_under_the_lease,
        )
        killed_at = asyncio.get_running_loop().time()
        done = await _finished_by(gw, job["id"], "survivor", timeout=30)
        took = asyncio.get_running_loop().time() - killed_at
        assert done["status"] == "succeeded", done
        # The dead worker's silence (5 s) and a claim, not its 60 s lease.
        assert took < 10, f"taken over after {took:.1f} s"
        assert len(gw.emu.submits()) == 1
        assert done["upstream"]["request_id"] == gw.emu.submits()[0]["request_id"]


async def test_after_the_database_returns_jobs_at_fal_are_looked_at_again_at_once(
    gateway, clips: dict[str, Clip]
) -> None:
    # What fal reported while the database was away is lost (webhooks answered 503 until fal
    # gave up, status streams could not write). Here nothing would report the job's end for a
    # minute (no webhooks, no status stream, polls a minute apart): the worker's LISTEN coming
    # back after a loss makes every job at fal due at once.
    async with gateway(
        public=False,
        status_streams=False,
        poll_interval_min=timedelta(seconds=60),
        poll_interval_max=timedelta(seconds=60),
        worker_poll_interval=timedelta(seconds=60),
    ) as gw:
        gw.emu.control(run_time=0.5)
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound-audio", "input": {"video_url": url}})
        started = await gw.wait(job["id"], until=lambda j: j["upstream"]["request_id"] is not None)
        request_id = started["upstream"]["request_id"]

        async def done_at_fal_and_put_off() -> bool:
            rows = await gw.sql(
                "SELECT lease_owner IS NULL AND next_action_at > now() + interval '30 seconds' "
                "FROM jobs WHERE id = :id",
                id=job["id"],
            )
            return bool(rows[0][0]) and gw.emu.job(request_id)["status"] == "COMPLETED"

        await eventually(done_at_fal_and_put_off, what="fal done, the job's next look far off")
        assert (await gw.get(job["id"]))["status"] != "succeeded"
        await gw.sql(  # the database "restarts" for the worker: its LISTEN connection ends
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        done = await gw.wait(job["id"], timeout=20)  # not the minute its poll was away
        assert done["status"] == "succeeded", done
