"""``FalClient.status_stream`` against the real fal emulator, over HTTP: statuses arrive as the
emulator's queue moves, the iteration ends with the request, and leaving the block early (or
being cancelled) gives the connection back. Every wait is on a condition, under a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from app.upstream import (
    FalClient,
    QueueState,
    QueueStatus,
    RetryPolicy,
    TransientUpstreamError,
    UpstreamAuthError,
    UpstreamNotFoundError,
)
from tests.support.emulator import EmulatorProcess
from tests.upstream.conftest import KLING, KLING_INPUT, fal_for

DEADLINE_S = (
    60  # a deadline, not a measurement: the emulator does real media work, on a busy machine too
)


@pytest.fixture(autouse=True)
def fresh_emulator(emu: EmulatorProcess) -> None:
    emu.reset()


@pytest.fixture
async def one_connection_fal(emu: EmulatorProcess) -> AsyncIterator[FalClient]:
    """A client with a single pooled connection and no retries: while a stream holds that
    connection, any other call fails at once with ``TransientUpstreamError`` (pool timeout)."""
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, pool=0.5)) as http:
        yield fal_for(emu, http, call_policy=RetryPolicy(max_attempts=1))


async def test_stream_follows_a_request_from_the_queue_to_completion(
    fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(queue_wait=0.5, run_time=1.0, log_interval_s=0.2)
    submitted = await fal.submit(KLING, KLING_INPUT)

    seen: list[QueueStatus] = []
    async with asyncio.timeout(DEADLINE_S), fal.status_stream(submitted.status_url) as statuses:
        async for status in statuses:
            seen.append(status)

    states = [status.status for status in seen]
    assert states[0] is QueueState.IN_QUEUE and seen[0].queue_position == 0
    assert QueueState.IN_PROGRESS in states
    assert states[-1] is QueueState.COMPLETED and states.count(QueueState.COMPLETED) == 1
    progress = [line.message for status in seen[1:-1] for line in status.logs]
    assert any(message.startswith("Inference progress") for message in progress)
    done = seen[-1]
    assert not done.failed
    assert done.inference_time is not None and done.inference_time >= 1.0
    assert {status.request_id for status in seen} == {submitted.request_id}

    # One stream, asking for logs; no status poll was needed.
    gets = emu.requests(method="GET", request_id=submitted.request_id)
    assert [(entry["path"], entry["query"]) for entry in gets] == [
        (f"{submitted.status_url.removeprefix(emu.base_url)}/stream", "logs=1")
    ]


async def test_leaving_the_stream_early_gives_its_connection_back(
    one_connection_fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(run_time=30)
    submitted = await one_connection_fal.submit(KLING, KLING_INPUT)
    async with asyncio.timeout(DEADLINE_S):
        async with one_connection_fal.status_stream(submitted.status_url) as statuses:
            async for status in statuses:
                assert not status.completed
                break
        # The pool's only connection is free again: this call would time out otherwise.
        assert not (await one_connection_fal.status(submitted.status_url)).completed


async def test_a_cancelled_follower_gives_its_connection_back(
    one_connection_fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(run_time=30)
    submitted = await one_connection_fal.submit(KLING, KLING_INPUT)
    following = asyncio.Event()
    # Kept referenced, so that the garbage collector cannot be what closes the connection.
    held: list[AsyncIterator[QueueStatus]] = []

    async def follow() -> None:
        async with one_connection_fal.status_stream(submitted.status_url) as statuses:
            held.append(statuses)
            async for _ in statuses:
                following.set()
                await asyncio.Event().wait()  # handling a status when the cancellation comes

    task = asyncio.create_task(follow())
    async with asyncio.timeout(DEADLINE_S):
        await following.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not (await one_connection_fal.status(submitted.status_url)).completed


async def test_an_unknown_request_is_not_found(fal: FalClient, emu: EmulatorProcess) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    url = f"{emu.base_url}/fal-ai/kling-video/requests/{unknown}/status"
    with pytest.raises(UpstreamNotFoundError) as caught:
        async with fal.status_stream(url):
            pass
    assert caught.value.request_id == unknown


async def test_a_wrong_key_is_an_auth_error(
    emu: EmulatorProcess, fal: FalClient, http: httpx.AsyncClient
) -> None:
    submitted = await fal.submit(KLING, KLING_INPUT)
    emu.control(keys=[emu.fal_key])
    intruder = FalClient("not-the-key", queue_url=emu.base_url, rest_url=emu.base_url, http=http)
    with pytest.raises(UpstreamAuthError):
        async with intruder.status_stream(submitted.status_url):
            pass


async def test_a_stream_that_ends_before_completion_is_transient(
    fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(run_time=30)
    submitted = await fal.submit(KLING, KLING_INPUT)
    async with asyncio.timeout(DEADLINE_S), fal.status_stream(submitted.status_url) as statuses:
        first = await anext(statuses)
        assert not first.completed
        # The emulator forgets every request, as fal after losing one: it ends the stream.
        emu.reset()
        with pytest.raises(TransientUpstreamError, match="ended before"):
            await anext(statuses)


async def test_a_silent_stream_is_transient(fal: FalClient, emu: EmulatorProcess) -> None:
    emu.control(run_time=30, log_interval_s=20, sse_keepalive_s=20)
    submitted = await fal.submit(KLING, KLING_INPUT)
    stream = fal.status_stream(submitted.status_url, max_silence_s=0.5)
    async with asyncio.timeout(DEADLINE_S), stream as statuses:
        with pytest.raises(TransientUpstreamError, match="silent"):
            async for status in statuses:
                assert not status.completed


async def test_keepalives_keep_a_quiet_stream_open(fal: FalClient, emu: EmulatorProcess) -> None:
    # 1.5 s of running without a new log line, kept alive by comments every 0.1 s.
    emu.control(run_time=1.5, log_interval_s=20, sse_keepalive_s=0.1)
    submitted = await fal.submit(KLING, KLING_INPUT)
    stream = fal.status_stream(submitted.status_url, max_silence_s=0.5)
    async with asyncio.timeout(DEADLINE_S), stream as statuses:
        seen = [status async for status in statuses]
    assert seen[-1].completed
