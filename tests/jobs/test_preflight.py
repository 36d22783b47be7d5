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


async def _check_model(
    model: str, job_input: dict[str, object], settings: Settings, tmp_dir: Path
) -> preflight_module.Checked:
    spec = CATALOG.require(model)
    return await preflight(
        spec=spec,
        job_input=job_input,
        upload=None,
        settings=settings,
        storage=LocalStorage(tmp_dir.parent / "storage"),
        fal=None,
        tmp_dir=tmp_dir,
        job_id=uuid.uuid4(),
        secret=b"",
    )


@pytest.mark.parametrize(
    ("seconds", "code"),
    [(1.0, "audio_too_short"), (3.0, None), (4.5, "audio_too_long")],
)
async def test_a_reference_clip_is_probed_and_held_to_its_range(
    settings: Settings, tmp_path: Path, seconds: float, code: str | None
) -> None:
    from tests.support.clips import make_tone

    clip = make_bouncing_square(tmp_path / "clip.mp4", duration_s=2.0, width=96, height=64)
    tone = make_tone(tmp_path / "ref.wav", seconds)
    reference = "data:audio/wav;base64," + base64.b64encode(tone.read_bytes()).decode()
    work = tmp_path / "work"
    work.mkdir()
    job_input = {"video_url": _data_uri(clip.path), "reference_audio_url": reference}
    if code is None:
        checked = await _check_model("controlfoley", job_input, settings, work)
        assert checked.payload_updates == {}  # a URL stands as given
    else:
        with pytest.raises(InputRejected) as caught:
            await _check_model("controlfoley", job_input, settings, work)
        assert caught.value.code == code
        assert caught.value.measured["param"] == "input.reference_audio_url"
        assert caught.value.measured["duration_s"] == pytest.approx(seconds, abs=0.01)
    assert list(work.iterdir()) == []


async def test_a_reference_that_is_not_audio_is_unreadable(
    settings: Settings, tmp_path: Path
) -> None:
    clip = make_bouncing_square(tmp_path / "clip.mp4", duration_s=2.0, width=96, height=64)
    work = tmp_path / "work"
    work.mkdir()
    job_input = {"video_url": _data_uri(clip.path), "reference_audio_url": _data_uri(clip.path)}
    with pytest.raises(InputRejected) as caught:  # a silent video has no audio stream
        await _check_model("controlfoley", job_input, settings, work)
    assert caught.value.code == "audio_unreadable"


async def test_a_start_offset_must_leave_a_second_of_video(
    settings: Settings, tmp_path: Path
) -> None:
    clip = make_bouncing_square(tmp_path / "clip.mp4", duration_s=2.0, width=96, height=64)
    work = tmp_path / "work"
    work.mkdir()
    url = _data_uri(clip.path)
    checked = await _check_model(
        "mirelo-sfx", {"video_url": url, "start_offset": 1.0}, settings, work
    )
    assert checked.duration_s == pytest.approx(2.0, abs=0.05)
    with pytest.raises(InputRejected) as caught:
        await _check_model("mirelo-sfx", {"video_url": url, "start_offset": 1.5}, settings, work)
    assert (caught.value.code, caught.value.measured["param"]) == (
        "start_offset_too_late",
        "input.start_offset",
    )


async def test_a_long_large_video_is_too_long_for_a_model_that_runs_on_segments(
    settings: Settings, tmp_path: Path
) -> None:
    """The model's byte cap is the size of what it is sent: a video it would take as segments is
    judged by its length first (and each segment, cut, by the cap), not refused for its size."""
    from dataclasses import replace

    kling = CATALOG.resolve("kling-video-to-audio")
    assert kling is not None and kling.segments
    long_clip = make_bouncing_square(tmp_path / "long.mp4", duration_s=21.0, width=96, height=64)
    short_clip = make_bouncing_square(tmp_path / "short.mp4", duration_s=4.0, width=96, height=64)
    cap = short_clip.path.stat().st_size // 2  # both clips are over it
    capped = replace(kling, limits=replace(kling.limits, max_bytes=cap))
    work = tmp_path / "work"
    work.mkdir()

    async def rejected(spec: object, clip: Path) -> InputRejected:
        with pytest.raises(InputRejected) as caught:
            await preflight(
                spec=spec,  # type: ignore[arg-type]
                job_input={"video_url": _data_uri(clip)},
                upload=None,
                settings=settings,
                storage=LocalStorage(tmp_path / "storage"),
                fal=None,
                tmp_dir=work,
                job_id=uuid.uuid4(),
                secret=b"",
            )
        return caught.value

    assert (await rejected(capped, long_clip.path)).code == "video_too_long"
    assert (await rejected(capped, short_clip.path)).code == "video_too_large"
    whole = replace(capped, segments=False)  # a model sent the whole video: its cap first
    assert (await rejected(whole, long_clip.path)).code == "video_too_large"
