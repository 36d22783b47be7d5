"""The event stream (GET /v1/jobs/{id}/events as text/event-stream) end to end: served by any
API process, resumed with Last-Event-ID through another, ended after the job's last event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from app.main import create_app
from tests.support.clips import Clip
from tests.support.serve import serving
from tests.support.sse import Message, messages
from tests.support.waiting import eventually

STREAM = {"Accept": "text/event-stream"}


def thinksound(gw, clip: Clip) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"model": "thinksound", "input": {"video_url": gw.video_url(clip)}}


async def test_a_stream_resumed_with_last_event_id_on_a_second_api_misses_nothing(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway() as gw:
        gw.emu.control(queue_wait=1, run_time=1.5)
        # A second API process of its own: its own pool, its own LISTEN connection and hub.
        async with (
            serving(create_app(gw.settings)) as second_url,
            httpx.AsyncClient(base_url=second_url, headers=gw.headers, timeout=30) as second,
        ):
            job = await gw.create(thinksound(gw, clips["bounce"]))
            assert job["urls"]["stream"] == f"{gw.base_url}/v1/jobs/{job['id']}/events"
            first: list[Message] = []
            url = f"/v1/jobs/{job['id']}/events"
            async with gw.client.stream("GET", url, headers={**gw.headers, **STREAM}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                async for message in messages(r):
                    first.append(message)
                    if message.event == "job.started":
                        break  # the client goes away mid-job
            assert [m.event for m in first][:1] == ["job.created"]
            resume = {**STREAM, "Last-Event-ID": first[-1].id or ""}
            async with second.stream("GET", url, headers=resume) as r:
                assert r.status_code == 200
                rest = [m async for m in messages(r)]  # ends by itself after the last event
            stored = await gw.events(job["id"])
            seen = first + rest
            assert [int(m.id or 0) for m in seen] == [e["seq"] for e in stored]
            assert [m.event for m in seen] == [e["type"] for e in stored]
            assert [m.data for m in seen] == stored  # data: the event as the JSON list gives it
            assert rest[-1].event == "job.succeeded"
            assert {"job.processing", "job.succeeded"} <= {m.event for m in rest}

            # Resumed after the end there is nothing to send: 204 stops an EventSource.
            r = await second.get(url, headers={**STREAM, "Last-Event-ID": rest[-1].id or ""})
            assert r.status_code == 204


async def test_a_stream_sends_keep_alives_while_the_job_waits_and_ends_after_its_end(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(event_stream_keepalive=timedelta(seconds=0.2)) as gw:
        gw.emu.control(queue_wait=2)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        comments: list[str] = []
        url = f"/v1/jobs/{job['id']}/events"
        async with gw.client.stream("GET", url, headers={**gw.headers, **STREAM}) as r:
            got = [m async for m in messages(r, comments=comments)]
        assert got[-1].event == "job.succeeded"
        assert "keep-alive" in comments
        assert [int(m.id or 0) for m in got] == list(range(1, len(got) + 1))
        # Nothing is left subscribed once the stream ended.
        hub = gw.app.state.hub  # type: ignore[union-attr]
        await eventually(lambda: hub.waiting == 0, what="the stream's subscription closed")


async def test_a_stream_of_a_finished_job_is_its_history_then_the_end(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway() as gw:
        job = await gw.create(
            {"model": "kling-video-to-audio", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        await gw.wait(job["id"])
        url = f"/v1/jobs/{job['id']}/events"
        stored = await gw.events(job["id"])
        async with gw.client.stream("GET", url, headers={**gw.headers, **STREAM}) as r:
            got = [m async for m in messages(r)]
        assert [m.data for m in got] == stored
        resume = {**gw.headers, **STREAM, "Last-Event-ID": "2"}
        async with gw.client.stream("GET", url, headers=resume) as r:
            resumed = [m async for m in messages(r)]
        assert [m.data for m in resumed] == stored[2:]
        r = await gw.client.get(url, headers={**gw.headers, **STREAM, "Last-Event-ID": "x"})
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_header" and r.json()["param"] == "Last-Event-ID"


async def test_another_tenants_job_has_no_stream(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(workers=0) as gw:
        job = await gw.create(thinksound(gw, clips["bounce"]))
        _, other_key = await gw.new_tenant("other")
        other = {"Authorization": f"Bearer {other_key}"}
        url = f"/v1/jobs/{job['id']}/events"
        r = await gw.client.get(url, headers={**other, **STREAM})
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "job_not_found"
        hub = gw.app.state.hub  # type: ignore[union-attr]
        assert hub.waiting == 0


async def test_a_stream_reads_again_when_its_listen_connection_comes_back(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(workers=0) as gw:
        hub = gw.app.state.hub  # type: ignore[union-attr]
        await eventually(hub.listening.is_set, what="the hub listening")
        job = await gw.create(thinksound(gw, clips["bounce"]))
        url = f"/v1/jobs/{job['id']}/events"
        async with gw.client.stream("GET", url, headers={**gw.headers, **STREAM}) as r:
            stream = messages(r)
            assert (await anext(stream)).event == "job.created"
            await gw.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = 'LISTEN \"foley_events\"'"
            )
            await eventually(lambda: not hub.listening.is_set(), what="the LISTEN lost")
            # Committed while nobody listens: its NOTIFY is never heard; the stream still gets it.
            cancel = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
            assert cancel.json()["status"] == "canceled"
            rest = [m async for m in stream]
        assert [m.event for m in rest] == ["job.canceled"]
        assert hub.connections >= 2
