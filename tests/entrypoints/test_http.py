"""A slow client cannot hold the API's connections: a request's head has a deadline, its body a
pace."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.responses import PlainTextResponse

from app.entrypoints.http import with_deadlines
from tests.support.emulator import free_port
from tests.support.waiting import eventually

HANDLED: list[str] = []  # what the app saw of each body: its size, or "disconnect"


async def _app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        if scope["path"] == "/late":  # busy before it reads: the client is not the one late
            await asyncio.sleep(3 * BODY_S)
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                HANDLED.append("disconnect")
                return
            size += len(message["body"])
            if not message.get("more_body"):
                break
        HANDLED.append(str(size))
        await PlainTextResponse(f"got {size}")(scope, receive, send)
        return
    await PlainTextResponse("ok")(scope, receive, send)


BODY_S = 0.5


@pytest.fixture
async def port() -> AsyncIterator[int]:
    number = free_port()
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=number,
        log_level="warning",
        http=with_deadlines(head_s=0.5, body_s=BODY_S),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), what="the server to start")
    yield number
    server.should_exit = True
    await task


async def _started(server: uvicorn.Server) -> bool:
    return server.started


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_a_client_dribbling_its_headers_is_cut_off(port: int) -> None:
    slow = socket.create_connection(("127.0.0.1", port))
    slow.setblocking(False)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
    started = time.monotonic()
    try:

        async def closed() -> bool:
            if time.monotonic() - started < 0.2:  # still well within the deadline: open
                assert not _closed_by_server(slow)
            return _closed_by_server(slow)

        await eventually(closed, timeout=10, what="the server to close the slow connection")
    finally:
        slow.close()


async def test_a_client_that_never_sends_is_cut_off(port: int) -> None:
    silent = socket.create_connection(("127.0.0.1", port))
    silent.setblocking(False)
    try:

        async def closed() -> bool:
            return _closed_by_server(silent)

        await eventually(closed, timeout=10, what="the server to close the silent connection")
    finally:
        silent.close()


async def test_a_prompt_client_is_served_and_kept_alive(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(2):  # two requests on one connection
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(2) == b"ok"
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_gets_408_and_the_handler_a_disconnect(port: int) -> None:
    HANDLED.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()  # ... and the other 90 bytes never come
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"application/problem+json" in head
    assert json.loads(body)["code"] == "request_body_timeout"

    async def handler_saw_the_disconnect() -> bool:
        return HANDLED == ["disconnect"]

    await eventually(handler_saw_the_disconnect, what="the handler to see a disconnect")


async def test_a_slow_body_that_keeps_coming_is_read_whole(port: int) -> None:
    """Each piece arrives well within the pace, the whole takes several times the deadline."""
    HANDLED.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pieces = 8
    started = time.monotonic()
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % pieces)
        for _ in range(pieces):
            await asyncio.sleep(
                BODY_S / 3
            )  # the client's pace: a piece every third of the deadline
            writer.write(b"x")
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert time.monotonic() - started > 2 * BODY_S  # the whole outlasted the deadline
    assert head.startswith(b"HTTP/1.1 200"), head
    assert HANDLED == [str(pieces)]


async def test_time_the_gateway_is_not_reading_is_not_the_clients(port: int) -> None:
    """A client that waits for ``100 Continue`` sends nothing until the handler asks for the
    body; the handler here asks after three deadlines."""
    HANDLED.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        writer.write(b"abcd")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert HANDLED == ["4"]
