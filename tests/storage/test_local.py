"""What is particular to `LocalStorage`: files in place under the root, no presigned URLs, and
cleaning up after crashed writers. The contract every backend shares is tested in test_base.py."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.media import probe
from app.storage import LocalStorage
from tests.support.clips import Clip

KEY = "tenants/t1/jobs/j1/video.mp4"


@pytest.fixture
def local_storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def test_local_path_is_probeable_in_place(
    local_storage: LocalStorage, mp4_with_audio: Clip
) -> None:
    await local_storage.put_file(KEY, mp4_with_audio.path, content_type="video/mp4")

    local = local_storage.local_path(KEY)

    assert local is not None and local.read_bytes() == mp4_with_audio.path.read_bytes()
    assert probe(local).has_audio


async def test_objects_live_under_the_root(local_storage: LocalStorage) -> None:
    await local_storage.put_stream(KEY, chunks_of(b"x"), content_type="text/plain")

    assert local_storage.local_path(KEY) == local_storage.root / KEY
    assert (local_storage.root / KEY).read_bytes() == b"x"


async def test_local_storage_has_no_presigned_urls(local_storage: LocalStorage) -> None:
    assert local_storage.supports_presigned_urls is False
    assert await local_storage.presigned_url(KEY, 600) is None


async def test_stale_temporary_files_are_removed_but_fresh_ones_kept(
    local_storage: LocalStorage,
) -> None:
    tmp_root = local_storage.root / ".tmp"
    tmp_root.mkdir(parents=True)
    stale, fresh = tmp_root / "stale", tmp_root / "fresh"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"another process is writing")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))

    assert await local_storage.remove_stale_tmp() == 1

    assert [p.name for p in tmp_root.iterdir()] == ["fresh"]
