"""The worker's preflight of a URL input: fetched and probed in memory when small, through a
temporary file when not, and nothing left behind either way."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from app.catalog.registry import CATALOG
from app.config import Settings
from app.jobs import preflight as preflight_module
from app.jobs.preflight import InputRejected, preflight
from app.storage import LocalStorage
from tests.support.clips import make_bouncing_square


def _data_uri(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


async def _check(url: str, settings: Settings, tmp_dir: Path) -> preflight_module.Checked:
    spec = CATALOG.resolve("thinksound")
    assert spec is not None
    return await preflight(
        spec=spec,
        job_input={"video_url": url},
        upload=None,
        settings=settings,
        storage=LocalStorage(tmp_dir.parent / "storage"),  # untouched by a URL input
        fal=None,
        tmp_dir=tmp_dir,
        job_id=uuid.uuid4(),
        secret=b"",
    )


@pytest.mark.parametrize("in_memory_max", [preflight_module.IN_MEMORY_MAX, 0])
async def test_an_input_is_measured_alike_in_memory_or_through_a_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_max: int
) -> None:
    monkeypatch.setattr(preflight_module, "IN_MEMORY_MAX", in_memory_max)
    clip = make_bouncing_square(tmp_path / "clip.mp4", duration_s=2.0, width=96, height=64)
    work = tmp_path / "work"
    work.mkdir()

    checked = await _check(_data_uri(clip.path), settings, work)

    assert checked.duration_s == pytest.approx(2.0, abs=1e-3)
    assert checked.probe["container"] == "mp4"
    assert checked.probe["size_bytes"] == clip.path.stat().st_size
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("in_memory_max", [preflight_module.IN_MEMORY_MAX, 0])
async def test_an_unreadable_input_is_rejected_and_leaves_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_max: int
) -> None:
    monkeypatch.setattr(preflight_module, "IN_MEMORY_MAX", in_memory_max)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 40)
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(InputRejected) as caught:
        await _check(_data_uri(garbage), settings, work)

    assert caught.value.code == "video_unreadable"
    assert list(work.iterdir()) == []
