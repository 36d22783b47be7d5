"""Output options end to end: the model's sound mixed under the video's own track, loudness
normalized, written in each format — through the gateway, its worker and the emulator. The
figures are checked with PyAV, pyloudnorm and scipy directly, not with app.media."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pyloudnorm
import pytest

from tests.media.conftest import decode_audio, true_peak_dbtp
from tests.netguard.conftest import LocalServer, not_found, serve_bytes
from tests.support.soundtrack_clips import SceneClip, make_scene_clip, speechlike_track

RATE = 44_100  # the emulator's, the clip's and the job's: no resampling between them


@pytest.fixture(scope="module")
def talking(tmp_path_factory: pytest.TempPathFactory) -> SceneClip:
    """A 4 s clip whose own track is speech-like (syllables and pauses), as dialogue would be."""
    root = tmp_path_factory.mktemp("soundtrack-clips")
    voice = speechlike_track(4.0, RATE, seed=3)
    return make_scene_clip(root / "talking.mp4", shots=(4.0,), audio=voice, audio_rate=RATE)


async def _download(gw: Any, url: str, dest: Path) -> Path:
    r = await gw.client.get(url, headers=gw.headers)
    assert r.status_code == 200, r.text
    dest.write_bytes(r.content)
    return dest


async def _model_sound(gw: Any, job_id: str, dest: Path) -> Path:
    """What the model made, from fal's (the emulator's) own output URL."""
    (output,) = await gw.sql("SELECT upstream_output FROM jobs WHERE id = :id", id=job_id)
    async with httpx.AsyncClient() as client:
        r = await client.get(output[0]["video"]["url"])
        r.raise_for_status()
    dest.write_bytes(r.content)
    return dest


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.shape[-1], b.shape[-1])
    return float(np.corrcoef(a[..., :n].ravel(), b[..., :n].ravel())[0, 1])


async def _upload(gw: Any, path: Path) -> dict[str, Any]:
    r = await gw.client.post(
        "/v1/files?filename=clip.mp4",
        content=path.read_bytes(),
        headers={**gw.headers, "Content-Type": "video/mp4"},
    )
    assert r.status_code == 201, r.text
    return {"video_file_id": r.json()["id"]}


@pytest.mark.parametrize("source", ["url", "upload"])
async def test_mix_keeps_the_original_track_under_the_generated_sound(
    gateway, talking: SceneClip, tmp_path: Path, source: str
) -> None:
    gain_db = -6.0
    async with gateway(public=False) as gw:
        video = (
            {"video_url": gw.emu.upload(talking.path, "video/mp4")}
            if source == "url"
            else await _upload(gw, talking.path)
        )
        job = await gw.create(
            {
                "model": "thinksound",
                "input": {**video, "prompt": "a ball"},
                "output": {
                    "audio_mode": "mix",
                    "audio_format": "wav",
                    "sample_rate": RATE,
                    "loudness": None,
                    # No ducking: the mix is then exactly original + gain × generated.
                    "mix": {"duck_db": 0, "original_gain_db": 0, "generated_gain_db": gain_db},
                },
            }
        )
        assert job["output"]["audio_mode"] == "mix"
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        result = done["result"]
        assert result["soundtrack"]["audio_mode"] == "mix"
        assert result["video"]["content_type"] == "video/quicktime"
        assert result["audio"]["content_type"] == "audio/wav"
        mixed, rate = decode_audio(await _download(gw, result["audio"]["url"], tmp_path / "m.wav"))
        generated, generated_rate = decode_audio(
            await _model_sound(gw, job["id"], tmp_path / "model.mp4")
        )
        original, original_rate = decode_audio(Path(talking.path))
    assert rate == generated_rate == original_rate == RATE
    n = min(mixed.shape[1], generated.shape[1], original.shape[1])
    mixed, generated, original = mixed[:, :n], generated[:, :n], original[:, :n]
    assert n >= 3.9 * RATE
    under = mixed - generated * 10 ** (gain_db / 20)
    assert _corr(under, original) >= 0.95  # the original is intact under the generated sound
    assert _corr(mixed - original, generated) >= 0.95  # and the generated sound is there


async def test_the_sound_lands_on_the_loudness_target(gateway, clips, tmp_path: Path) -> None:
    async with gateway(public=False) as gw:
        job = await gw.create(
            {
                "model": "thinksound",
                "input": {"video_url": gw.video_url(clips["bounce"]), "prompt": "a ball"},
                "output": {"loudness": {"target_lufs": -23}},
            }
        )
        assert job["output"] == {
            "audio_mode": "replace",
            "audio_format": "aac",
            "sample_rate": 48000,
            "channels": 2,
            "loudness": {"target_lufs": -23.0, "true_peak_dbtp": -1.0},
            "mix": None,
        }
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        result = done["result"]
        audio, rate = decode_audio(await _download(gw, result["audio"]["url"], tmp_path / "a.m4a"))
        video_path = await _download(gw, result["video"]["url"], tmp_path / "v.mp4")
    assert rate == 48_000 and result["audio"]["content_type"] == "audio/mp4"
    assert pyloudnorm.Meter(rate).integrated_loudness(audio.T) == pytest.approx(-23, abs=1.0)
    assert true_peak_dbtp(audio) <= -1.0
    soundtrack = result["soundtrack"]
    assert soundtrack["audio_mode"] == "replace" and soundtrack["expected_lufs"] == pytest.approx(
        -23, abs=0.5
    )
    with av.open(str(video_path)) as container:  # the video carries the same sound
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.video[0].codec_context.name == "h264"


@pytest.mark.parametrize(
    ("fmt", "rate", "content_type", "codec"),
    [
        ("mp3", 44_100, "audio/mpeg", "mp3"),
        ("flac", 22_050, "audio/flac", "flac"),
        ("opus", 48_000, "audio/ogg", "opus"),
        ("wav", 16_000, "audio/wav", "pcm_s16le"),
    ],
)
async def test_generated_only_is_the_audio_alone_in_the_format_asked(
    gateway, clips, tmp_path: Path, fmt: str, rate: int, content_type: str, codec: str
) -> None:
    async with gateway(public=False) as gw:
        job = await gw.create(
            {
                "model": "thinksound",
                "input": {"video_url": gw.video_url(clips["bounce"]), "prompt": "a ball"},
                "output": {
                    "audio_mode": "generated_only",
                    "audio_format": fmt,
                    "sample_rate": rate,
                    "channels": 1,
                },
            }
        )
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        result = done["result"]
        assert result["video"] is None
        assert result["audio"]["content_type"] == content_type
        path = await _download(gw, result["audio"]["url"], tmp_path / f"a.{fmt}")
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.codec.canonical_name == codec
        assert stream.codec_context.sample_rate == rate
        assert stream.codec_context.channels == 1
    assert result["audio"]["duration_s"] == pytest.approx(4.0, abs=0.05)


async def test_a_mix_whose_original_is_gone_fails_clearly(
    gateway, talking: SceneClip, tmp_path: Path
) -> None:
    """Mixing needs the caller's video again at the end: a URL that stopped answering fails the
    job with its reason (and what fal billed stays billed)."""
    origin = LocalServer()
    await origin.start()
    data = Path(talking.path).read_bytes()
    fetches = 0

    async def twice(seen, writer) -> None:  # type: ignore[no-untyped-def]
        nonlocal fetches
        fetches += 1  # the preflight, then fal; gone for the third
        await (serve_bytes(data) if fetches <= 2 else not_found)(seen, writer)

    origin.route("/talking.mp4", twice)
    try:
        async with gateway(public=False) as gw:
            job = await gw.create(
                {
                    "model": "thinksound",
                    "input": {"video_url": origin.url("127.0.0.1", "/talking.mp4")},
                    "output": {"audio_mode": "mix"},
                }
            )
            done = await gw.wait(job["id"], timeout=60)
            assert done["status"] == "failed", done
            assert done["error"]["code"] == "output_unavailable"
            assert "no longer be fetched" in done["error"]["message"]
            assert done["usage"] is not None and done["usage"]["status"] == "settled"
            assert len(gw.emu.submits()) == 1
    finally:
        await origin.stop()
    assert fetches == 3


async def test_jobs_made_at_once_in_every_mode_all_finish(gateway, clips) -> None:
    """Several output-option jobs in flight together on one worker."""
    async with gateway(public=False) as gw:
        url = gw.video_url(clips["bounce"])
        jobs = [
            await gw.create(
                {"model": "thinksound", "input": {"video_url": url}, "output": {"audio_mode": m}}
            )
            for m in ("replace", "mix", "generated_only")
        ]
        done = await asyncio.gather(*(gw.wait(j["id"], timeout=60) for j in jobs))
    assert [d["status"] for d in done] == ["succeeded"] * 3
    # mix on a video without sound of its own is replace: there is nothing to keep
    assert [d["result"]["soundtrack"]["audio_mode"] for d in done] == [
        "replace",
        "replace",
        "generated_only",
    ]
