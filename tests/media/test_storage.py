from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.media import (
    InvalidKeyError,
    LocalStorage,
    ObjectNotFoundError,
    ObjectTooLargeError,
    Storage,
    StoredObject,
    probe,
)
from tests.support.clips import Clip

KEY = "tenants/t1/jobs/j1/video.mp4"
DATA = os.urandom(200_000)  # a bit over three 64 KiB chunks


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await storage.open_range(key, start, end)])


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_put_stream_then_stat_read_and_delete(storage: LocalStorage) -> None:
    stored = await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4")

    assert stored == StoredObject(KEY, len(DATA), hashlib.sha256(DATA).hexdigest(), "video/mp4")
    assert stored.etag == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert await storage.stat(KEY) == stored
    assert await read_all(storage, KEY) == DATA

    await storage.delete(KEY)

    assert await storage.stat(KEY) is None
    with pytest.raises(ObjectNotFoundError):
        await storage.open_range(KEY)
    await storage.delete(KEY)  # deleting twice is fine


async def test_open_range_returns_the_inclusive_slice_in_64k_chunks(
    storage: LocalStorage,
) -> None:
    await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4")

    chunks = [chunk async for chunk in await storage.open_range(KEY, 1_000, 150_000)]

    assert b"".join(chunks) == DATA[1_000:150_001]
    assert max(len(c) for c in chunks) <= 64 * 1024
    assert await read_all(storage, KEY, 0, 0) == DATA[:1]
    assert await read_all(storage, KEY, len(DATA) - 5) == DATA[-5:]


async def test_too_large_stream_is_refused_early_and_leaves_nothing(
    storage: LocalStorage,
) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1000

    with pytest.raises(ObjectTooLargeError) as excinfo:
        await storage.put_stream(KEY, endless(), content_type="video/mp4", max_bytes=50_000)

    assert excinfo.value.max_bytes == 50_000
    assert consumed == 51  # stopped at the first byte over the limit
    assert await storage.stat(KEY) is None
    assert files_under(storage.root) == []


async def test_too_large_replacement_keeps_the_existing_object(storage: LocalStorage) -> None:
    first = await storage.put_stream(KEY, chunks_of(b"old"), content_type="text/plain")

    with pytest.raises(ObjectTooLargeError):
        await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4", max_bytes=1000)

    assert await storage.stat(KEY) == first
    assert await read_all(storage, KEY) == b"old"


async def test_exactly_max_bytes_is_accepted(storage: LocalStorage) -> None:
    stored = await storage.put_stream(
        KEY, chunks_of(DATA), content_type="video/mp4", max_bytes=len(DATA)
    )

    assert stored.size_bytes == len(DATA)


async def test_failing_source_leaves_no_partial_file(storage: LocalStorage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield DATA[:70_000]
        raise ConnectionError("upstream went away")

    with pytest.raises(ConnectionError):
        await storage.put_stream(KEY, broken(), content_type="video/mp4")

    assert await storage.stat(KEY) is None
    assert files_under(storage.root) == []


async def test_replacing_an_object_updates_data_and_metadata(storage: LocalStorage) -> None:
    await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4")

    second = await storage.put_stream(KEY, chunks_of(b"new"), content_type="text/plain")

    assert await storage.stat(KEY) == second
    assert await read_all(storage, KEY) == b"new"


async def test_empty_object(storage: LocalStorage) -> None:
    stored = await storage.put_stream(KEY, chunks_of(b""), content_type="audio/mp4")

    assert stored.size_bytes == 0
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(storage, KEY) == b""


async def test_put_file_copies_and_local_path_is_probeable(
    storage: LocalStorage, mp4_with_audio: Clip
) -> None:
    original = mp4_with_audio.path.read_bytes()

    stored = await storage.put_file(KEY, mp4_with_audio.path, content_type="video/mp4")

    assert stored.sha256 == hashlib.sha256(original).hexdigest()
    assert stored.size_bytes == len(original)
    assert mp4_with_audio.path.read_bytes() == original  # the source is left alone
    local = storage.local_path(KEY)
    assert local is not None and local.read_bytes() == original
    assert probe(local).has_audio


@pytest.mark.parametrize(
    "key",
    [
        "../escape",
        "a/../../escape",
        "a/./b",
        "/etc/passwd",
        "a\\b",
        "..\\escape",
        "",
        "a//b",
        "a/",
        ".meta/a.json",
        ".tmp/x",
        "a/.hidden",
        "a\x00b",
        "a b",
        "x" * 1025,
    ],
)
async def test_unsafe_keys_are_rejected(storage: LocalStorage, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await storage.put_stream(key, chunks_of(b"x"), content_type="text/plain")
    with pytest.raises(InvalidKeyError):
        await storage.stat(key)
    with pytest.raises(InvalidKeyError):
        await storage.open_range(key)
    with pytest.raises(InvalidKeyError):
        await storage.delete(key)
    with pytest.raises(InvalidKeyError):
        storage.local_path(key)
    assert files_under(storage.root.parent) == []


async def test_objects_live_under_the_root(storage: LocalStorage) -> None:
    await storage.put_stream(KEY, chunks_of(b"x"), content_type="text/plain")

    assert storage.local_path(KEY) == storage.root / KEY
    assert (storage.root / KEY).read_bytes() == b"x"


async def test_local_storage_is_a_storage_without_presigned_urls(storage: LocalStorage) -> None:
    assert isinstance(storage, Storage)
    assert storage.supports_presigned_urls is False
    assert await storage.presigned_url(KEY, 600) is None


async def test_stale_temporary_files_are_removed_but_fresh_ones_kept(
    storage: LocalStorage,
) -> None:
    tmp_root = storage.root / ".tmp"
    tmp_root.mkdir(parents=True)
    stale, fresh = tmp_root / "stale", tmp_root / "fresh"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"another process is writing")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))

    assert await storage.remove_stale_tmp() == 1

    assert [p.name for p in tmp_root.iterdir()] == ["fresh"]
