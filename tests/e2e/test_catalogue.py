"""The catalogue's models end to end: through the gateway (API, worker, preflight, finalize,
ledger) against the emulator's models, each billed exactly as the emulator bills it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import av
import pytest

from tests.e2e.conftest import ADMIN
from tests.support.clips import Clip, make_tone
from tests.support.waiting import eventually

ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
HUNYUAN = "fal-ai/hunyuan-video-foley"


def _micros(usd: float) -> int:
    return int((Decimal(str(usd)) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def _usage(gw, job_id: str) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    rows = await gw.sql(
        "SELECT upstream_request_id, status, unit, units, cost_micros, cost_nanos "
        "FROM usage_records WHERE job_id = :j",
        j=job_id,
    )
    assert len(rows) == 1, rows
    return tuple(rows[0])


async def _settled_as_billed(gw, job_id: str) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """The job's ledger row once settled, checked equal to the emulator's bill for it."""
    await eventually(
        lambda: _is_settled(gw, job_id), timeout=20, interval=0.1, what="the job's settlement"
    )
    row = await _usage(gw, job_id)
    bill = gw.emu.job(row[0])["usage"]
    assert row[4] == _micros(bill["cost"]) and row[5] == round(bill["cost"] * 1e9)
    assert Decimal(row[3]) == Decimal(str(bill["unit_quantity"]))
    return row


async def _is_settled(gw, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    rows = await gw.sql("SELECT status FROM usage_records WHERE job_id = :j", j=job_id)
    return bool(rows) and rows[0][0] == "settled"


async def _download(gw, url: str, path: Path) -> Path:  # type: ignore[no-untyped-def]
    r = await gw.client.get(url, headers=gw.headers)
    assert r.status_code == 200, r.text
    path.write_bytes(r.content)
    return path


def _sent(gw, endpoint: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The payload of the one request the gateway sent to ``endpoint``, as fal received it."""
    (submit,) = gw.emu.submits(endpoint)
    body: dict[str, Any] = gw.emu.job(submit["request_id"])["input"]
    return body


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


async def test_mmaudio_gets_the_videos_length_not_its_8_s_default(
    gateway, clips: dict[str, Clip], tmp_path: Path
) -> None:
    async with gateway(public=True) as gw:
        job = await gw.create(
            {
                "model": "mmaudio",
                "input": {"video_url": gw.video_url(clips["bounce"]), "prompt": "a rubber ball"},
            }
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        sent = _sent(gw, "fal-ai/mmaudio-v2")
        assert sent["duration"] == pytest.approx(4.0, abs=0.05)  # the probe's, not fal's 8
        assert sent["prompt"] == "a rubber ball" and "num_steps" not in sent
        video, audio = done["result"]["video"], done["result"]["audio"]
        assert video["duration_s"] == pytest.approx(4.0, abs=0.05)
        assert audio["duration_s"] == pytest.approx(4.0, abs=0.05)
        assert done["result"]["samples"] is None  # a single-output model keeps its shape
        row = await _settled_as_billed(gw, job["id"])
        assert row[2] == "output_second" and Decimal(row[3]) == Decimal(str(sent["duration"]))


async def test_a_job_may_not_set_mmaudios_duration(gateway) -> None:
    async with gateway(public=True, workers=0) as gw:
        r = await gw.client.post(
            "/v1/jobs",
            json={
                "model": "mmaudio",
                "input": {"video_url": "https://x.example/a.mp4", "prompt": "x", "duration": 8},
            },
            headers=gw.headers,
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["param"] == "input.duration"


async def test_hunyuan_stays_unpriced_until_a_price_is_set_then_settles_as_billed(
    gateway, clips: dict[str, Clip]
) -> None:
    async def no_hunyuan_price() -> None:
        await gw.sql(
            "UPDATE usage_records SET price_id = NULL WHERE price_id IN "
            "(SELECT id FROM prices WHERE model = :m)",
            m=HUNYUAN,
        )
        await gw.sql("DELETE FROM prices WHERE model = :m", m=HUNYUAN)

    async with gateway(public=True, housekeeping_interval=timedelta(seconds=0.5)) as gw:
        await no_hunyuan_price()
        try:
            models = (await gw.client.get("/v1/models", headers=gw.headers)).json()["data"]
            listed = next(m for m in models if m["id"] == HUNYUAN)
            assert listed["price"] == {"unit": "video", "price_usd": None}
            job = await gw.create(
                {
                    "model": "hunyuan-foley",
                    "input": {"video_url": gw.video_url(clips["bounce"]), "prompt": "steps"},
                }
            )
            done = await gw.wait(job["id"])
            assert done["status"] == "succeeded", done
            assert done["result"]["audio"]["duration_s"] == pytest.approx(4.0, abs=0.05)
            assert _sent(gw, HUNYUAN)["text_prompt"] == "steps"
            await eventually(
                lambda: _status_is(gw, job["id"], "unpriced"),
                timeout=20,
                interval=0.1,
                what="the usage to be found unpriced",
            )
            blocked = await gw.sql("SELECT usage_settled FROM jobs WHERE id = :j", j=job["id"])
            assert blocked == [(False,)]  # settlement blocked: never a silent $0
            # The operator reads fal's bill and sets the price from before the job.
            request_id = (await _usage(gw, job["id"]))[0]
            billed = gw.emu.job(request_id)["usage"]
            r = await gw.client.post(
                "/v1/admin/prices",
                json={
                    "model": "hunyuan-foley",
                    "unit": "video",
                    "unit_price_usd": str(billed["unit_price"]),
                    "effective_from": "2024-01-01T00:00:00Z",
                },
                headers=ADMIN_H,
            )
            assert r.status_code == 201, r.text
            await _settled_as_billed(gw, job["id"])
            settled = await gw.sql("SELECT usage_settled FROM jobs WHERE id = :j", j=job["id"])
            assert settled == [(True,)]
        finally:
            await no_hunyuan_price()


async def _status_is(gw, job_id: str, status: str) -> bool:  # type: ignore[no-untyped-def]
    rows = await gw.sql("SELECT status FROM usage_records WHERE job_id = :j", j=job_id)
    return bool(rows) and rows[0][0] == status


async def test_controlfoley_takes_an_audio_upload_as_its_reference(
    gateway, clips: dict[str, Clip], tmp_path: Path
) -> None:
    async with gateway(public=False) as gw:
        wav = make_tone(tmp_path / "ref.wav", 3.0).read_bytes()
        r = await gw.client.post(
            "/v1/files?filename=ref.wav",
            content=wav,
            headers={**gw.headers, "Content-Type": "audio/wav"},
        )
        assert r.status_code == 201, r.text
        upload = r.json()
        assert upload["content_type"] == "audio/wav"
        assert upload["probe"]["duration_s"] == pytest.approx(3.0, abs=0.01)
        job = await gw.create(
            {
                "model": "controlfoley",
                "input": {
                    "video_url": gw.video_url(clips["bounce"]),
                    "prompt": "a bell",
                    "reference_audio_file_id": upload["id"],
                },
            }
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        sent = _sent(gw, "fal-ai/controlfoley")
        assert sent["reference_audio_url"].startswith(gw.emu.base_url)  # handed over via fal's CDN
        assert sent["duration"] == pytest.approx(4.0, abs=0.05)
        assert "reference_audio_file_id" not in sent
        # the audio matches the video: 4 s, not ControlFoley's default 8
        path = await _download(gw, done["result"]["audio"]["url"], tmp_path / "out.m4a")
        assert _audio_seconds(path) == pytest.approx(4.0, abs=0.05)
        await _settled_as_billed(gw, job["id"])


@pytest.mark.parametrize(("seconds", "code"), [(5.0, "audio_too_long"), (1.0, "audio_too_short")])
async def test_controlfoley_refuses_a_reference_out_of_range_before_sending(
    gateway, clips: dict[str, Clip], tmp_path: Path, seconds: float, code: str
) -> None:
    async with gateway(public=False) as gw:
        reference = gw.emu.upload(make_tone(tmp_path / "ref.wav", seconds), "audio/wav")
        body = {
            "model": "controlfoley",
            "input": {"video_url": gw.video_url(clips["bounce"]), "reference_audio_url": reference},
        }
        r = await gw.client.post("/v1/validate", json=body, headers=gw.headers)
        assert r.status_code == 200 and r.json()["code"] == code, r.text
        done = await gw.wait((await gw.create(body))["id"])
        assert done["status"] == "failed" and done["error"]["code"] == code, done
        details = done["error"]["details"]
        assert details["param"] == "input.reference_audio_url"
        assert details["duration_s"] == pytest.approx(seconds, abs=0.01)
        assert gw.emu.submits("fal-ai/controlfoley") == []  # nothing sent, nothing billed


async def test_controlfoley_reference_must_be_the_tenants_audio_upload(
    gateway, clips: dict[str, Clip], tmp_path: Path
) -> None:
    async with gateway(public=False, workers=0) as gw:
        silent_video = await gw.client.post(
            "/v1/files",
            content=clips["bounce"].path.read_bytes(),
            headers={**gw.headers, "Content-Type": "video/mp4"},
        )
        _, other_key = await gw.new_tenant("other")
        theirs = await gw.client.post(
            "/v1/files",
            content=make_tone(tmp_path / "ref.wav", 3.0).read_bytes(),
            headers={"Authorization": f"Bearer {other_key}", "Content-Type": "audio/wav"},
        )
        # a first job warms the estimate's cache: later creations may take the one-statement
        # path, which must still look the reference up
        await gw.create(
            {"model": "controlfoley", "input": {"video_url": "https://x.example/a.mp4"}}
        )
        private = await gw.client.post(
            "/v1/jobs",
            json={
                "model": "controlfoley",
                "input": {
                    "video_url": "https://x.example/a.mp4",
                    "reference_audio_url": "http://10.1.2.3/ref.wav",
                },
            },
            headers=gw.headers,
        )
        assert private.status_code == 422, private.text
        assert private.json()["errors"][0]["param"] == "input.reference_audio_url"
        for file_id, code in (
            (theirs.json()["id"], "file_not_found"),
            (silent_video.json()["id"], "not_an_audio_upload"),
        ):
            r = await gw.client.post(
                "/v1/jobs",
                json={
                    "model": "controlfoley",
                    "input": {
                        "video_url": "https://x.example/a.mp4",
                        "reference_audio_file_id": file_id,
                    },
                },
                headers=gw.headers,
            )
            assert r.status_code == 422, r.text
            error = r.json()["errors"][0]
            assert (error["param"], error["code"]) == ("input.reference_audio_file_id", code)
        assert (await gw.sql("SELECT count(*) FROM jobs")) == [(1,)]


@pytest.mark.parametrize("public", [True, False], ids=["webhook", "polling"])
async def test_mirelo_stores_every_sample(
    gateway, clips: dict[str, Clip], tmp_path: Path, public: bool
) -> None:
    async with gateway(public=public) as gw:
        job = await gw.create(
            {
                "model": "mirelo-sfx",
                "input": {"video_url": gw.video_url(clips["bounce"]), "samples": 3, "seed": 4},
            }
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        sent = _sent(gw, "mirelo-ai/sfx-v1.5/video-to-audio")
        assert sent["num_samples"] == 3
        assert sent["duration"] == pytest.approx(4.0, abs=0.05)
        result = done["result"]
        samples = result["samples"]
        assert len(samples) == 3 and result["video"] is None
        assert result["audio"] == samples[0]["audio"]  # the first, where clients look for one
        contents = set()
        for index, sample in enumerate(samples):
            audio = sample["audio"]
            assert audio["content_type"] == "audio/wav"
            assert audio["duration_s"] == pytest.approx(4.0, abs=0.05)
            path = await _download(gw, audio["url"], tmp_path / f"{index}.wav")
            contents.add(path.read_bytes())
        assert len(contents) == 3
        rows = await gw.sql(
            "SELECT kind, filename FROM files WHERE job_id = :j ORDER BY filename", j=job["id"]
        )
        assert [tuple(r) for r in rows] == [("output_audio", f"sample-{i}.wav") for i in range(3)]
        row = await _settled_as_billed(gw, job["id"])
        # per second of output and per sample: 3 × the video's length
        assert Decimal(row[3]) == Decimal(str(sent["duration"])) * 3


async def test_mirelos_start_offset_shortens_what_is_made(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True) as gw:
        url = gw.video_url(clips["bounce"])
        job = await gw.create(
            {"model": "mirelo-sfx", "input": {"video_url": url, "start_offset": 1.5}}
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        assert _sent(gw, "mirelo-ai/sfx-v1.5/video-to-audio")["duration"] == pytest.approx(
            2.5, abs=0.05
        )
        assert [s["audio"]["duration_s"] for s in done["result"]["samples"]] == [
            pytest.approx(2.5, abs=0.05)
        ] * 2
        late = await gw.create(
            {"model": "mirelo-sfx", "input": {"video_url": url, "start_offset": 3.5}}
        )
        failed = await gw.wait(late["id"])
        assert failed["error"]["code"] == "start_offset_too_late", failed
        assert len(gw.emu.submits("mirelo-ai/sfx-v1.5/video-to-audio")) == 1


async def test_sonilo_scores_music_per_sample(
    gateway, clips: dict[str, Clip], tmp_path: Path
) -> None:
    async with gateway(public=True) as gw:
        job = await gw.create(
            {
                "model": "sonilo-music",
                "input": {"video_url": gw.video_url(clips["bounce"]), "samples": 2},
            }
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        samples = done["result"]["samples"]
        assert len(samples) == 2
        for sample in samples:
            assert sample["audio"]["content_type"] == "audio/mp4"
            assert sample["audio"]["codec"] == "aac"
            assert sample["audio"]["duration_s"] == pytest.approx(4.0, abs=0.1)
        row = await _settled_as_billed(gw, job["id"])
        assert row[2] == "output_second"


def _foley(gw, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "FOLEY_ENV": "test",
        "FOLEY_DATABASE_URL": gw.settings.database_url,
        "FOLEY_DATA_DIR": str(gw.settings.data_dir),
        "FOLEY_FAL_PLATFORM_URL": f"{gw.emu.base_url}/v1",
        "FOLEY_FAL_ADMIN_KEY": gw.emu.admin_key,
        "FOLEY_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.entrypoints", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_reconcile_finds_no_difference_for_the_new_models(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=True) as gw:
        url = gw.video_url(clips["bounce"])
        bodies = [
            {"model": "mmaudio", "input": {"video_url": url, "prompt": "steps"}},
            {"model": "controlfoley", "input": {"video_url": url}},
            {"model": "mirelo-sfx", "input": {"video_url": url, "samples": 4}},
            {"model": "sonilo-music", "input": {"video_url": url, "samples": 3}},
        ]
        jobs = [await gw.create(body) for body in bodies]
        for job in jobs:
            assert (await gw.wait(job["id"], timeout=60))["status"] == "succeeded"
        await asyncio.gather(*(_settled_as_billed(gw, job["id"]) for job in jobs))
        today = datetime.now(UTC).date()
        window = ("--from", str(today), "--to", str(today + timedelta(days=1)))
        report = _foley(gw, "usage", "reconcile", *window)
        assert report.returncode == 0, report.stdout + report.stderr
        assert "no differences" in report.stdout


async def test_retention_removes_every_sample(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True, retention_days=0.5 / 86400) as gw:  # half a second
        job = await gw.create(
            {
                "model": "sonilo-music",
                "input": {"video_url": gw.video_url(clips["bounce"]), "samples": 3},
            }
        )
        done = await gw.wait(job["id"])
        urls = [s["audio"]["url"] for s in done["result"]["samples"]]
        assert len(urls) == 3
        retention = timedelta(days=gw.settings.retention_days)

        async def past_retention() -> bool:
            rows = await gw.sql(
                "SELECT max(created_at) FROM files WHERE job_id = :j", j=uuid.UUID(job["id"])
            )
            return datetime.now(UTC) - retention > rows[0][0]

        await eventually(past_retention, what="the job's files to outlive the retention")
        await gw.workers[0].housekeep()
        after = await gw.get(job["id"])
        assert after["data_removed"] is True
        for url in urls:
            r = await gw.client.get(url, headers=gw.headers)
            assert r.status_code == 410 and r.json()["code"] == "file_removed"
        assert not list((gw.settings.data_dir / "files" / "jobs").rglob("sample-*"))
