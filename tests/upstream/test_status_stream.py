"""The status stream (``app/upstream/status_stream.py``) against a faked network edge
(httpx.MockTransport): the request it sends, how each opening answer maps to the error family,
and what a stream that breaks off abruptly raises. How it follows a real request, and how it
closes, is tested against the emulator in test_status_stream_emulator.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.upstream import (
    FalClient,
    QueueState,
    QueueStatus,
    TransientUpstreamError,
    UpstreamAccountLockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamNotFoundError,
    UpstreamProtocolError,
    UpstreamUntrustedURLError,
)
from tests.upstream.conftest import BASE, FAL_ID, KEY, RID, MakeClient, Recorder, nginx, replies

SSE = {"content-type": "text/event-stream; charset=utf-8", **FAL_ID}


def event_stream(*chunks: bytes | Exception) -> httpx.Response:
    """A 200 event stream sending ``chunks`` as they are (an exception cuts it there)."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    return httpx.Response(200, headers=SSE, content=body())


async def follow(client: FalClient, status_url: str = f"{BASE}/status") -> list[QueueStatus]:
    async with client.status_stream(status_url) as statuses:
        return [status async for status in statuses]


async def test_stream_url_is_the_stored_status_url_plus_stream_with_its_query_kept(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client = make_client(replies(event_stream(b'data: {"status": "COMPLETED"}\n\n')))
    async with client.status_stream(f"{BASE}/status?sig=a%2Bb", logs=False) as statuses:
        assert [status.status async for status in statuses] == [QueueState.COMPLETED]
    (request,) = recorder.requests
    assert request.method == "GET"
    assert str(request.url) == f"{BASE}/status/stream?sig=a%2Bb&logs=0"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == f"Key {KEY}"


async def test_events_parse_as_statuses_across_chunks_and_line_endings(
    make_client: MakeClient,
) -> None:
    client = make_client(
        replies(
            event_stream(
                b": keep-alive\r\n\r\n",
                b'event: status\r\nid: 1\r\ndata: {"status": "IN_QUEUE",\r\ndata: "queue_',
                b'position": 2}\r',
                b'\n\r\ndata: {"status": "IN_PROGRESS", "logs": [{"message": "caf\xc3',
                b'\xa9 1/2", "level": "INFO"}]}\n\n',
                b'data: {"status": "COMPLETED", "metrics": {"inference_time": 1.5}}\n\n',
                b'data: {"status": "IN_QUEUE"}\n\n',  # after COMPLETED: never read
            )
        )
    )
    queued, running, done = await follow(client)
    assert (queued.status, queued.queue_position) == (QueueState.IN_QUEUE, 2)
    assert [line.message for line in running.logs] == ["café 1/2"]
    assert done.completed and done.inference_time == 1.5
    assert done.raw == {"status": "COMPLETED", "metrics": {"inference_time": 1.5}}
    assert {queued.request_id, running.request_id, done.request_id} == {RID}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(401, json={"detail": "Invalid key"}), UpstreamAuthError),
        (
            httpx.Response(403, json={"detail": "User is locked. Reason: Exhausted balance."}),
            UpstreamAccountLockedError,
        ),
        (
            httpx.Response(404, json={"detail": "Request not found"}, headers=FAL_ID),
            UpstreamNotFoundError,
        ),
        (httpx.Response(500, json={"detail": "oops"}, headers=FAL_ID), TransientUpstreamError),
        (nginx(502), TransientUpstreamError),
        (httpx.Response(429, headers={"Retry-After": "1"}), TransientUpstreamError),
        (httpx.ConnectError("refused"), TransientUpstreamError),
        (httpx.ReadTimeout("no headers"), TransientUpstreamError),
        (httpx.Response(200, json={"status": "IN_QUEUE"}), UpstreamProtocolError),
    ],
)
async def test_opening_failures_map_to_the_error_family_and_are_never_retried(
    make_client: MakeClient,
    recorder: Recorder,
    answer: httpx.Response | Exception,
    error: type[UpstreamError],
) -> None:
    client = make_client(replies(answer))
    with pytest.raises(error):
        async with client.status_stream(f"{BASE}/status"):
            pass
    assert len(recorder.requests) == 1
    assert recorder.sleeps == []


async def test_a_stored_url_outside_the_fal_hosts_never_gets_the_key(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client = make_client(replies(event_stream()))
    with pytest.raises(UpstreamUntrustedURLError):
        await follow(client, "https://evil.example/fal-ai/kling-video/requests/x/status")
    assert recorder.requests == []


async def test_a_stream_cut_mid_way_is_transient(make_client: MakeClient) -> None:
    cut = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    client = make_client(replies(event_stream(b'data: {"status": "IN_PROGRESS"}\n\n', cut)))
    seen: list[QueueStatus] = []
    with pytest.raises(TransientUpstreamError, match="broke off"):
        async with client.status_stream(f"{BASE}/status") as statuses:
            async for status in statuses:
                seen.append(status)
    assert [status.status for status in seen] == [QueueState.IN_PROGRESS]


async def test_an_unreadable_event_is_a_protocol_error(make_client: MakeClient) -> None:
    client = make_client(replies(event_stream(b"data: <html>\n\n")))
    with pytest.raises(UpstreamProtocolError) as caught:
        await follow(client)
    assert caught.value.body == "<html>"
    assert caught.value.request_id == RID
