"""The local-filesystem storage backend, the default.

`LocalStorage` keeps object `a/b.mp4` at `<root>/a/b.mp4`, its metadata at
`<root>/.meta/a/b.mp4.json`, and writes through `<root>/.tmp/` (same filesystem, so the final
rename is atomic). Names starting with a dot are not valid keys, so objects and bookkeeping
never collide. All file I/O runs in worker threads, in 64 KiB chunks, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from app.storage.base import (
    CHUNK_SIZE,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StoredObject,
    validate_key,
)

# Small network chunks are gathered up to this size before a write, to keep thread hops few.
_WRITE_BUFFER_SIZE = 1024 * 1024


class LocalStorage:
    """Objects as files under `root` (see the module docstring for the layout)."""

    supports_presigned_urls = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._meta_root = self.root / ".meta"
        self._tmp_root = self.root / ".tmp"

    def _data_path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / f"{validate_key(key)}.json"

    def _new_tmp_path(self) -> Path:
        self._tmp_root.mkdir(parents=True, exist_ok=True)
        return self._tmp_root / uuid.uuid4().hex

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        max_bytes: int | None = None,
    ) -> StoredObject:
        validate_key(key)
        tmp_path = await asyncio.to_thread(self._new_tmp_path)
        f = await asyncio.to_thread(tmp_path.open, "wb")
        try:
            hasher = hashlib.sha256()
            size = 0
            buffer = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(max_bytes)
                buffer += chunk
                if len(buffer) >= _WRITE_BUFFER_SIZE:
                    await asyncio.to_thread(_hash_and_write, f, hasher, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(_hash_and_write, f, hasher, bytes(buffer))
            await asyncio.to_thread(_sync_and_close, f)
            obj = StoredObject(key, size, hasher.hexdigest(), content_type)
            await asyncio.to_thread(self._commit, tmp_path, obj)
            return obj
        finally:
            # Synchronous on purpose: it must also run when the task is being cancelled.
            f.close()
            tmp_path.unlink(missing_ok=True)

    async def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject:
        validate_key(key)
        return await asyncio.to_thread(self._put_file_sync, key, Path(path), content_type)

    def _put_file_sync(self, key: str, source: Path, content_type: str) -> StoredObject:
        tmp_path = self._new_tmp_path()
        try:
            hasher = hashlib.sha256()
            size = 0
            with source.open("rb") as src, tmp_path.open("wb") as dst:
                while chunk := src.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            obj = StoredObject(key, size, hasher.hexdigest(), content_type)
            self._commit(tmp_path, obj)
            return obj
        finally:
            tmp_path.unlink(missing_ok=True)

    def _commit(self, tmp_path: Path, obj: StoredObject) -> None:
        # Data first, metadata second: stat() reports an object only once its metadata exists,
        # so a reader never sees metadata pointing at a file that is not there yet.
        data_path = self._data_path(obj.key)
        meta_path = self._meta_path(obj.key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, data_path)
        meta_tmp = self._new_tmp_path()
        try:
            meta_tmp.write_text(json.dumps(asdict(obj)))
            os.replace(meta_tmp, meta_path)
        finally:
            meta_tmp.unlink(missing_ok=True)

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._data_path(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range {start}-{end}")
        if not await asyncio.to_thread(path.is_file):
            raise ObjectNotFoundError(key)
        # The file is opened on the first iteration, so a response that is built but never sent
        # holds no file handle. Deleted in between, the read fails mid-body instead of as a 404.
        return _read_chunks(path, start, None if end is None else end - start + 1)

    async def stat(self, key: str) -> StoredObject | None:
        return await asyncio.to_thread(self._stat_sync, key)

    def _stat_sync(self, key: str) -> StoredObject | None:
        try:
            meta = json.loads(self._meta_path(key).read_text())
            size = self._data_path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredObject(
            key=key, size_bytes=size, sha256=meta["sha256"], content_type=meta["content_type"]
        )

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete_sync, key)

    def _delete_sync(self, key: str) -> None:
        # Metadata first: from then on stat() says "absent" even if the data removal fails.
        self._meta_path(key).unlink(missing_ok=True)
        self._data_path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._data_path(key)

    async def presigned_url(self, key: str, expires_s: int) -> str | None:
        validate_key(key)
        return None

    async def remove_stale_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Remove temporary files a crashed writer left behind; returns how many.

        Only files older than `older_than_s` go: the API and the worker share the root, and a
        younger file may be another process's write in progress.
        """
        return await asyncio.to_thread(self._remove_stale_tmp_sync, older_than_s)

    def _remove_stale_tmp_sync(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in self._tmp_root.glob("*") if self._tmp_root.is_dir() else ():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _hash_and_write(f: BinaryIO, hasher: hashlib._Hash, data: bytes) -> None:
    hasher.update(data)
    f.write(data)


def _sync_and_close(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


async def _read_chunks(path: Path, offset: int, length: int | None) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(f.seek, offset)
        remaining = length
        while remaining is None or remaining > 0:
            size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
            chunk = await asyncio.to_thread(f.read, size)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        f.close()
