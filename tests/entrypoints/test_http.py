"""A slow client cannot hold the API's connections: a request's head has a deadline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.responses import PlainTextResponse

from app.entrypoints.http import with_head_timeout
from tests.support.emulator import free_port
from tests.support.waiting import eventually


async def _app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "http":
        await PlainTextResponse("ok")(scope, receive, send)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    number = free_port()
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=number, log_level="warning", http=with_head_timeout(0.5)
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
