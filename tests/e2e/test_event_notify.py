"""Committed job events are announced on the events channel, in order, and only once committed:
what waits on a job's news (streams, held requests, webhook fan-out) listens there."""

from __future__ import annotations

import asyncio
import json
import uuid

from app.db.driver import EngineDriver
from app.jobs.store import EVENTS_CHANNEL
from tests.support.clips import Clip


async def test_every_committed_event_but_the_creation_is_announced_in_order(
    gateway, clips: dict[str, Clip]
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with gateway() as gw, EngineDriver(gw.engine).acquire() as conn:
        await conn.add_listener(EVENTS_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        try:
            job = await gw.create(
                {
                    "model": "kling-video-to-audio",
                    "input": {"video_url": gw.video_url(clips["bounce"])},
                }
            )
            await gw.wait(job["id"])
            stored = await gw.sql(
                "SELECT seq, type FROM job_events WHERE job_id = :id ORDER BY seq", id=job["id"]
            )
            expected = [
                f"{job['id']}:{seq}:{kind}" for seq, kind in stored if kind != "job.created"
            ]
            announced: list[str] = []
            while len(announced) < len(expected):
                announced.append(await asyncio.wait_for(heard.get(), 10))
            assert announced == expected
            assert stored[0].type == "job.created" and expected[-1].endswith("job.succeeded")

            # An event whose transaction rolls back is never announced; the next committed one is.
            async with gw.engine.connect() as sa_conn:
                raw = await sa_conn.get_raw_connection()
                driver = raw.driver_connection
                insert = (
                    "INSERT INTO job_events (job_id, tenant_id, seq, type, data, job_created_at) "
                    "SELECT id, tenant_id, $2, $3, '{}'::jsonb, created_at FROM jobs WHERE id = $1"
                )
                job_id = uuid.UUID(job["id"])
                tx = driver.transaction()
                await tx.start()
                await driver.execute(insert, job_id, 1000, "job.logs")
                await tx.rollback()
                await driver.execute(insert, job_id, 1001, "job.logs")
            assert await asyncio.wait_for(heard.get(), 10) == f"{job['id']}:1001:job.logs"
            assert heard.empty(), json.dumps(list(heard._queue))  # type: ignore[attr-defined]
        finally:
            await conn.execute("UNLISTEN *")
