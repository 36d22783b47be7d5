"""A small HTTP/1.1 client for one thing: POST a body to a vetted address, read the status.

Why not httpx (which the gateway uses for fal): a delivery is one small POST whose answer is
only its status, and through httpx it cost ~1.9 ms of CPU (its layers and httpcore's pool
bookkeeping, measured in bench/README.md): one worker could not make 500 a second. This sends
the request and reads the answer on asyncio streams, over kept-alive connections.

Connections are pooled per (scheme, address, port, host name): one opened — and, for https,
certificate-checked — for a name is never reused for another name on the same address. TLS
checks the certificate against the name (``server_hostname``: SNI and hostname check) while the
socket goes to the address the caller vetted. Redirects are not followed: a 3xx is an answer
like any other. Times are the caller's (``asyncio.timeout`` around ``post``): a request cut
there closes its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass

# Answers longer than this are read no further (their connection is then closed): what is kept
# of a body is a few hundred characters of an error.
MAX_BODY = 64 * 1024
MAX_HEADER_LINES = 100
KEEP_IDLE = 32  # idle connections kept per key


class ProtocolError(Exception):
    """The receiver's answer is not HTTP/1.x as it should be."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names (a repeated header: its last value)
    body: bytes


@dataclass(frozen=True, slots=True)
class _Key:
    scheme: str
    address: str
    port: int
    host: str


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Http1Pool:
    def __init__(self, tls: ssl.SSLContext, *, connect_timeout_s: float) -> None:
        self.tls = tls
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[_Key, deque[_Conn]] = {}

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def post(
        self,
        *,
        scheme: str,
        address: str,
        port: int,
        host: str,
        host_header: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Answer:
        """POST ``body`` to ``address`` for ``host``. Raises OSError (connecting, TLS, a broken
        connection), asyncio.IncompleteReadError or ProtocolError."""
        key = _Key(scheme, address, port, host)
        head = _head(target, host_header, headers, len(body))
        conn = self._take_idle(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, head, body)
            except (OSError, asyncio.IncompleteReadError):
                # A kept-alive connection the receiver had closed: sent again on a new one.
                # (The receiver may have had it after all: deliveries are at least once, and
                # carry the same webhook-id.)
                pass
        conn = await self._open(key)
        return await self._exchange(key, conn, head, body)

    def _take_idle(self, key: _Key) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    async def _open(self, key: _Key) -> _Conn:
        tls = key.scheme == "https"
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                key.address,
                key.port,
                ssl=self.tls if tls else None,
                server_hostname=key.host if tls else None,
                limit=MAX_BODY,
            )
        return _Conn(reader, writer)

    async def _exchange(self, key: _Key, conn: _Conn, head: bytes, body: bytes) -> Answer:
        reusable = False
        try:
            conn.writer.write(head + body)
            await conn.writer.drain()
            answer, reusable = await _read_answer(conn.reader)
            return answer
        finally:
            if reusable:
                self._idle.setdefault(key, deque()).append(conn)
                if len(self._idle[key]) > KEEP_IDLE:
                    self._idle[key].popleft().close()
            else:
                conn.close()


def _head(target: str, host_header: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {length}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """The answer, and whether its connection may carry another request."""
    status_line = await reader.readuntil(b"\r\n")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ProtocolError("too many header lines")
    keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if 100 <= status < 200 or status in (204, 304):
        return Answer(status, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, complete = await _chunked(reader)
        return Answer(status, headers, body), keep and complete
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        n = int(length)
        if n > MAX_BODY:
            return Answer(status, headers, await reader.read(MAX_BODY)), False
        return Answer(status, headers, await reader.readexactly(n)), keep
    # Delimited by the connection's end: read what fits, never reuse it.
    return Answer(status, headers, await reader.read(MAX_BODY)), False


async def _chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    body = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return body, True
        if len(body) + size > MAX_BODY:
            return body, False
        body += await reader.readexactly(size)
        await reader.readexactly(2)
