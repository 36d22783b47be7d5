"""Live status: while a job runs at fal, its status, start and logs are current (the worker
follows fal's status stream), with and without webhooks; its events tell its history in order."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.e2e.conftest import TERMINAL
from tests.support.clips import Clip

RUN_S = 6.0  # long enough that a 30 s poll or webhook grace could not explain what is seen


@pytest.mark.parametrize("public", [False, True], ids=["polling-only", "webhooks"])
async def test_a_running_job_shows_processing_its_start_and_logs_before_it_ends(
    gateway, clips: dict[str, Clip], public: bool
) -> None:
    async with gateway(
        public=public,
        # Nothing but the status stream can bring news within the run: the first look after the
        # submit, and every later poll, are 30 s away.
        poll_interval_min=timedelta(seconds=30),
        poll_interval_max=timedelta(seconds=30),
        webhook_grace=timedelta(seconds=30),
    ) as gw:
        gw.emu.control(run_time=RUN_S)
        job = await gw.create(
            {"model": "kling-video-to-audio", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )

        def running_with_logs(j: dict[str, Any]) -> bool:
            return j["status"] in TERMINAL or (j["status"] == "processing" and bool(j["logs"]))

        seen = await gw.wait(job["id"], until=running_with_logs, timeout=RUN_S + 20)
        assert seen["status"] == "processing", seen  # seen running, not only at its end
        assert seen["started_at"] is not None and seen["upstream"]["queue_position"] is None
        assert any("%" in line["message"] or line["message"] for line in seen["logs"])

        done = await gw.wait(job["id"], timeout=RUN_S + 30)
        assert done["status"] == "succeeded", done
        assert done["metrics"]["inference_s"] >= RUN_S  # fal's own number, from the stream
        assert len(done["logs"]) >= len(seen["logs"])

        r = await gw.client.get(f"/v1/jobs/{job['id']}/events", headers=gw.headers)
        assert r.status_code == 200, r.text
        events = r.json()["data"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        types = [e["type"] for e in events]
        assert types[:3] == ["job.created", "job.submitting", "job.started"]
        assert types[-1] == "job.succeeded"
        assert types.index("job.processing") < types.index("job.succeeded")
        assert "job.logs" in types[types.index("job.processing") :]
        # The stream told us: no status polls while it ran, at most the webhook's final look.
        polls = [
            e
            for e in gw.emu.requests(method="GET")
            if e["path"].endswith("/status")
            and e.get("request_id") == done["upstream"]["request_id"]
        ]
        assert len(polls) <= 1, polls
