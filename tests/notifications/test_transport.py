"""One attempt as the sender makes it, against real local servers: what each kind of answer
makes of it, kept-alive connections (and one the receiver closed meanwhile), the outbound
guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from app.netguard import OutboundPolicy
from app.notifications.transport import Transport
from tests.support.webhook_sink import WebhookSink


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[list[bytes]], Awaitable[tuple[str, list[int]]]]]:
    """A server answering each request with the next of ``answers`` (raw bytes), counting the
    connections it was asked on."""
    servers: list[asyncio.Server] = []

    async def start(answers: list[bytes]) -> tuple[str, list[int]]:
        connections: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            try:
                while answers:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                    await reader.readexactly(length)
                    answer = answers.pop(0)
                    writer.write(answer)
                    await writer.drain()
                    if b"Connection: close" in answer:
                        break
            except asyncio.IncompleteReadError:
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook?x=1", connections

    yield start
    for server in servers:
        server.close()


def transport(*, loopback: bool = True, timeout: float = 5.0) -> Transport:
    return Transport(
        OutboundPolicy(max_bytes=1, allow_loopback=loopback), timedelta(seconds=timeout)
    )


async def test_a_2xx_is_success_over_one_kept_alive_connection(raw_server) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    chunked = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    url, connections = await raw_server([ok, chunked, ok])
    t = transport()
    try:
        outcomes = [await t.post(url, {"webhook-id": "msg_1"}, "{}") for _ in range(3)]
    finally:
        await t.aclose()
    assert [(o.status_code, o.error) for o in outcomes] == [(200, None), (202, None), (200, None)]
    assert len(connections) == 1


async def test_a_connection_the_receiver_closed_is_replaced(raw_server) -> None:
    closing = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    url, connections = await raw_server([closing, closing])
    t = transport()
    try:
        first = await t.post(url, {}, "{}")
        second = await t.post(url, {}, "{}")
    finally:
        await t.aclose()
    assert first.ok and second.ok
    assert len(connections) == 2


async def test_failures_say_why_and_honour_retry_after(raw_server) -> None:
    answers = [
        b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 4\r\n\r\nbusy",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\nboom!",
    ]
    url, _ = await raw_server(answers)
    t = transport()
    try:
        redirect, busy, broken = [await t.post(url, {}, "{}") for _ in range(3)]
    finally:
        await t.aclose()
    assert redirect.status_code == 302 and "not followed" in (redirect.error or "")
    assert busy.status_code == 503 and busy.retry_after == timedelta(seconds=120)
    assert busy.error == "answered 503: busy"
    assert broken.error == "answered 500: boom!" and broken.retry_after is None


async def test_a_receiver_that_never_answers_times_out() -> None:
    with WebhookSink(responses=[None]) as sink:
        t = transport(timeout=0.5)
        try:
            outcome = await t.post(sink.url, {}, "{}")
        finally:
            await t.aclose()
    assert outcome.status_code is None and outcome.error == "no answer within 0.5 s"


async def test_nothing_unreachable_or_refused_is_an_answer() -> None:
    t = transport(loopback=False)
    try:
        refused = await t.post("http://127.0.0.1:9/hook", {}, "{}")
        metadata = await t.post("http://169.254.169.254/latest", {}, "{}")
    finally:
        await t.aclose()
    assert refused.status_code is None and "url_destination_not_allowed" in (refused.error or "")
    assert "url_destination_not_allowed" in (metadata.error or "")
    t = transport()
    try:
        closed_port = await t.post("http://127.0.0.1:9/hook", {}, "{}")
    finally:
        await t.aclose()
    assert closed_port.status_code is None and "ConnectionRefused" in (closed_port.error or "")
