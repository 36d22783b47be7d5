"""Byte streams for uploads and downloads: never hold a whole video in memory.

File I/O runs in a worker thread chunk by chunk, so a slow disk does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

DEFAULT_CHUNK_SIZE = 1024 * 1024

# Where an upload reads from: a local file (replayable), or a one-shot async stream of chunks.
ByteSource = str | os.PathLike[str] | AsyncIterable[bytes]
# Where a download writes to: a local path, or an async callable that takes each chunk in order.
ChunkSink = Callable[[bytes], Awaitable[None]]


class SourceAlreadyConsumed(Exception):
    """A one-shot stream was asked for its bytes a second time."""


class UploadBody:
    """An upload's bytes, re-readable when they come from a file.

    ``stream()`` gives a fresh iterator per attempt. For a one-shot async iterable the first call
    works and a later one raises ``SourceAlreadyConsumed`` once any chunk has been pulled (a retry
    after a connect error, when nothing was read, is still fine).
    """

    def __init__(self, source: ByteSource, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._chunk_size = chunk_size
        self._path: Path | None = None
        self._one_shot: AsyncIterable[bytes] | None = None
        self._started = False
        if isinstance(source, str | os.PathLike):
            self._path = Path(source)
        else:
            self._one_shot = source

    @property
    def replayable(self) -> bool:
        return self._path is not None or not self._started

    async def size(self) -> int | None:
        if self._path is None:
            return None
        stat = await asyncio.to_thread(self._path.stat)
        return stat.st_size

    def stream(self) -> AsyncIterator[bytes]:
        if self._path is not None:
            return _read_file(self._path, self._chunk_size)
        if self._started:
            raise SourceAlreadyConsumed("the upload stream was already consumed")
        assert self._one_shot is not None
        return self._track(self._one_shot)

    async def _track(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in source:
            self._started = True
            yield chunk


async def _read_file(path: Path, chunk_size: int) -> AsyncIterator[bytes]:
    handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


class FileWriter:
    """Writes a download to ``<dest>.part`` and renames it into place only when complete, so a
    reader never sees a truncated file under the final name."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = Path(dest)
        self.partial = self.dest.with_name(self.dest.name + ".part")
        self._handle: BinaryIO | None = None

    async def open(self) -> None:
        self._handle = await asyncio.to_thread(self.partial.open, "wb")

    async def write(self, chunk: bytes) -> None:
        assert self._handle is not None
        await asyncio.to_thread(self._handle.write, chunk)

    async def commit(self) -> None:
        await self._close()
        await asyncio.to_thread(os.replace, self.partial, self.dest)

    async def discard(self) -> None:
        await self._close()
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.partial.unlink)

    async def _close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await asyncio.to_thread(handle.close)
