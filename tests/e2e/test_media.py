"""Media end to end: preflight before paying, uploads, delivery to fal, retention, SSRF.

Every rejection is checked against the emulator's request log: no upstream request was made."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest

from app.media.samples import ensure_sample_video
from tests.e2e.conftest import ADMIN
from tests.support.clips import Clip, make_bouncing_square
from tests.support.waiting import eventually

KLING = "kling-video-to-audio"


@pytest.fixture(scope="module")
def more_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media-clips")
    long_clip = make_bouncing_square(
        root / "long.mp4", duration_s=21.0, width=64, height=48, fps=12
    )
    webm = make_bouncing_square(
        root / "real.webm", duration_s=4.0, width=64, height=48, container="webm"
    )
    lying = root / "lying.mp4"  # a WebM whose name says MP4
    lying.write_bytes(Path(webm.path).read_bytes())
    garbage = root / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    # Its index first (it still opens as a 4 s video), then a few frames and half of one.
    truncated = root / "truncated.mp4"
    truncated.write_bytes(ensure_sample_video(root / "sample").read_bytes()[:3000])
    return {
        "long": Path(long_clip.path),
        "lying": lying,
        "garbage": garbage,
        "truncated": truncated,
    }


async def _rejected(gw, body: dict) -> dict:  # type: ignore[no-untyped-def]
    job = await gw.create(body)
    done = await gw.wait(job["id"])
    assert done["status"] == "failed", done
    assert gw.emu.submits() == [], "nothing may reach fal for a rejected input"
    assert done["usage"] is None  # nothing on the ledger
    return done["error"]


@pytest.mark.parametrize(
    ("case", "code", "detail_key"),
    [
        ("short", "video_too_short", "duration_s"),
        ("long", "video_too_long", "max_duration_s"),
        ("lying", "unsupported_container", "container"),
        ("garbage", "video_unreadable", None),
        ("truncated", "video_unreadable", None),
        ("missing", "video_unreachable", "status"),
    ],
)
async def test_kling_limits_are_checked_before_any_upstream_request(
    gateway,
    clips: dict[str, Clip],
    more_clips: dict[str, Path],
    case: str,
    code: str,
    detail_key: str | None,
) -> None:
    # A video longer than Kling takes runs as segments, up to the gateway's own longest (20 s
    # here): the 21 s clip is over both.
    async with gateway(public=False, max_video_s=20.0) as gw:
        if case == "short":
            url = gw.video_url(clips["short"])
        elif case == "missing":
            url = f"{gw.emu.base_url}/files/nobody/none.mp4"
        else:
            url = gw.emu.upload(more_clips[case], "video/mp4")
        error = await _rejected(gw, {"model": KLING, "input": {"video_url": url}})
        assert error["code"] == code, error
        if detail_key:
            assert detail_key in (error["details"] or {}), error
        if case == "short":
            assert abs(error["details"]["duration_s"] - 2.0) < 0.05


async def test_size_and_thinksound_duration_limits(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=False, max_input_bytes=2_000) as gw:
        url = gw.video_url(clips["bounce"])  # larger than 2 kB
        error = await _rejected(gw, {"model": "thinksound", "input": {"video_url": url}})
        assert error["code"] == "video_too_large"
    # The deployment's cap on ThinkSound's input is the model's limit: a longer video runs as
    # segments within it, and one longer than the gateway takes is refused, naming that limit.
    async with gateway(public=False, thinksound_max_duration_s=3.0, max_video_s=3.5) as gw:
        url = gw.video_url(clips["bounce"])
        error = await _rejected(gw, {"model": "thinksound", "input": {"video_url": url}})
        assert error["code"] == "video_too_long" and error["details"]["max_duration_s"] == 3.5
    async with gateway(public=False, thinksound_max_duration_s=3.0, segment_overlap_s=0.5) as gw:
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound", "input": {"video_url": url}})
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        assert len(done["segments"]) == 2, done["segments"]
        assert all(s["end_s"] - s["start_s"] <= 3.0 for s in done["segments"])
        assert len(gw.emu.submits()) == 2  # one request per segment, nothing else
        assert {s["request_id"] for s in done["segments"]} == {
            e["request_id"] for e in gw.emu.submits()
        }


async def test_probe_is_kept_and_reprices_the_reservation(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=False) as gw:
        job = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded"
        assert done["probe"]["container"] == "mp4"
        assert abs(done["probe"]["duration_s"] - 4.0) < 0.05
        assert done["probe"]["size_bytes"] > 0
        # 4 s × the default 1.0 compute s per video s × $0.001 (not the 10 s assumed at creation)
        assert done["usage"]["estimated_cost_usd"] == "0.004000"


@pytest.mark.parametrize("case", ["metadata", "private", "loopback_name"])
async def test_ssrf_refusals(gateway, clips: dict[str, Clip], case: str) -> None:
    async with gateway(public=False, outbound_allow_loopback=False) as gw:
        if case == "loopback_name":
            # A name that resolves to loopback: refused by the worker, after DNS, before fetching.
            port = gw.emu.base_url.rsplit(":", 1)[1]
            url = f"http://localhost:{port}/files/x/clip.mp4"
            error = await _rejected(gw, {"model": KLING, "input": {"video_url": url}})
            assert error["code"] == "url_destination_not_allowed"
            assert error["details"]["reason"] == "loopback"
            return
        url = {
            "metadata": "http://169.254.169.254/latest/meta-data/clip.mp4",
            "private": "http://10.0.0.7/clip.mp4",
        }[case]
        r = await gw.client.post(
            "/v1/jobs", headers=gw.headers, json={"model": KLING, "input": {"video_url": url}}
        )
        assert r.status_code == 422
        assert r.json()["param"] == "input.video_url"
        assert r.json()["errors"][0]["code"] == "url_destination_not_allowed"
        assert gw.emu.submits() == []


async def test_upload_then_job_through_fals_cdn(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True) as gw:
        data = Path(clips["bounce"].path).read_bytes()
        r = await gw.client.post(
            "/v1/files?filename=clip.mp4",
            content=data,
            headers={**gw.headers, "Content-Type": "video/mp4"},
        )
        assert r.status_code == 201, r.text
        upload = r.json()
        assert upload["object"] == "file" and upload["kind"] == "input_upload"
        assert upload["size_bytes"] == len(data) and upload["content_type"] == "video/mp4"
        assert upload["probe"]["video"]["width"] == 160
        import hashlib

        assert upload["sha256"] == hashlib.sha256(data).hexdigest()
        job = await gw.create(
            {"model": "thinksound", "input": {"video_file_id": upload["id"], "prompt": "a ball"}}
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        cdn_uploads = gw.emu.requests(method="POST", path_prefix="/files/upload")
        assert len(cdn_uploads) == 1  # handed to fal through its CDN upload flow
        sent = gw.emu.job(done["upstream"]["request_id"])
        assert "/files/" in str(sent) and gw.base_url not in str(sent.get("input", sent))
        # Another tenant cannot use it.
        _, other = await gw.new_tenant("other")
        r = await gw.client.post(
            "/v1/jobs",
            headers={"Authorization": f"Bearer {other}"},
            json={"model": "thinksound", "input": {"video_file_id": upload["id"]}},
        )
        assert r.status_code == 422 and r.json()["param"] == "input.video_file_id"


async def test_an_upload_reaches_fal_for_a_tenant_with_a_budget(
    gateway, clips: dict[str, Clip]
) -> None:
    # A budget sends 'sending' through the general transition (its reservation is re-priced):
    # the URL fal fetches the upload from must still be in what is submitted.
    async with gateway(public=True) as gw:
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}",
            json={"budget_usd": "5.00"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 200, r.text
        files = {"file": ("clip.mp4", Path(clips["bounce"].path).read_bytes(), "video/mp4")}
        upload = (await gw.client.post("/v1/files", files=files, headers=gw.headers)).json()
        job = await gw.create({"model": "thinksound", "input": {"video_file_id": upload["id"]}})
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["usage"]["status"] == "settled"


async def test_upload_delivered_as_a_signed_gateway_url(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True, upload_delivery="signed_url") as gw:
        files = {"file": ("clip.mov", Path(clips["bounce"].path).read_bytes(), "video/quicktime")}
        r = await gw.client.post("/v1/files", files=files, headers=gw.headers)
        assert r.status_code == 201, r.text
        upload = r.json()
        assert upload["content_type"] == "video/mp4"  # sniffed, not what the client claimed
        job = await gw.create({"model": KLING, "input": {"video_file_id": upload["id"]}})
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        assert gw.emu.requests(method="POST", path_prefix="/files/upload") == []
        fetched = gw.emu.job(done["upstream"]["request_id"])
        assert f"{gw.base_url}/v1/files/{upload['id']}/signed?" in str(fetched)
        # The signed URL is the only way in without a key; a forged signature is a 404.
        r = await gw.client.get(f"/v1/files/{upload['id']}/signed?expires=9999999999&sig=00")
        assert r.status_code == 404


async def test_uploads_refuse_what_is_not_a_video_and_what_is_too_large(
    gateway, more_clips: dict[str, Path]
) -> None:
    async with gateway(public=False, max_input_bytes=100_000) as gw:
        r = await gw.client.post(
            "/v1/files",
            content=more_clips["garbage"].read_bytes(),
            headers={**gw.headers, "Content-Type": "video/mp4"},
        )
        assert r.status_code == 422 and r.json()["code"] == "video_unreadable"

        async def big():  # a stream with no Content-Length, larger than the cap
            for _ in range(30):
                yield b"\0" * 8192

        r = await gw.client.post(
            "/v1/files", content=big(), headers={**gw.headers, "Content-Type": "video/mp4"}
        )
        assert r.status_code == 413 and r.json()["code"] == "upload_too_large"
        assert (await gw.sql("SELECT count(*) FROM files"))[0][0] == 0
        leftovers = [
            p
            for p in (gw.settings.data_dir / "files").rglob("*")
            if p.is_file() and ".meta" not in p.parts
        ]
        assert leftovers == []


async def test_validate_answers_without_creating(
    gateway, clips: dict[str, Clip], more_clips: dict[str, Path]
) -> None:
    async with gateway(public=False, workers=0) as gw:
        ok = (
            await gw.client.post(
                "/v1/validate",
                headers=gw.headers,
                json={"model": KLING, "input": {"video_url": gw.video_url(clips["bounce"])}},
            )
        ).json()
        assert ok["valid"] is True and abs(ok["probe"]["duration_s"] - 4.0) < 0.05
        assert ok["estimate"]["estimated_cost_usd"] == "0.035000"
        bad = (
            await gw.client.post(
                "/v1/validate",
                headers=gw.headers,
                json={"model": KLING, "input": {"video_url": gw.video_url(clips["short"])}},
            )
        ).json()
        assert bad["valid"] is False and bad["code"] == "video_too_short"
        # longer than Kling takes: valid, as the segments it would run as, each a video's price
        long = (
            await gw.client.post(
                "/v1/validate",
                headers=gw.headers,
                json={"model": KLING, "input": {"video_url": gw.emu.upload(more_clips["long"])}},
            )
        ).json()
        assert long["valid"] is True and long["code"] is None, long
        assert len(long["segments"]) == 2 and long["segments"][-1]["end_s"] == pytest.approx(21.0)
        assert long["estimate"]["estimated_cost_usd"] == "0.070000"
        assert (await gw.sql("SELECT count(*) FROM jobs"))[0][0] == 0
        assert gw.emu.submits() == []


async def test_retention_removes_files_and_marks_the_job(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True, retention_days=0.5 / 86400) as gw:  # half a second
        job = await gw.create(
            {"model": "thinksound-audio", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"])
        audio_url = done["result"]["audio"]["url"]
        assert (await gw.client.get(audio_url, headers=gw.headers)).status_code == 200
        retention = timedelta(days=gw.settings.retention_days)

        async def past_retention() -> bool:
            # The same comparison as app.files.retention, on the job's newest file.
            rows = await gw.sql(
                "SELECT max(created_at) FROM files WHERE job_id = :j", j=uuid.UUID(job["id"])
            )
            return datetime.now(UTC) - retention > rows[0][0]

        await eventually(past_retention, what="the job's files to outlive the retention")
        await gw.workers[0].housekeep()
        after = await gw.get(job["id"])
        assert after["data_removed"] is True and after["result"]["audio"]["size_bytes"] > 0
        r = await gw.client.get(audio_url, headers=gw.headers)
        assert r.status_code == 410 and r.json()["code"] == "file_removed"
        assert not list((gw.settings.data_dir / "files" / "jobs").rglob("audio.*"))


async def test_thinksound_audio_is_fitted_to_the_video(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True) as gw:
        gw.emu.control(thinksound_shortfall_s=1.0)  # the real model's known shortfall
        job = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"])
        video, audio = done["result"]["video"], done["result"]["audio"]
        assert abs(audio["duration_s"] - video["duration_s"]) < 0.05
        path = gw.settings.data_dir / "check.mp4"
        path.write_bytes((await gw.client.get(video["url"], headers=gw.headers)).content)
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            assert abs(float(a.duration * a.time_base) - 4.0) < 0.05


async def test_an_upload_that_stalls_gets_408_and_stores_nothing(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=False, workers=0, http_body_timeout=timedelta(seconds=0.5)) as gw:
        video = clips["bounce"].path.read_bytes()
        host, port = gw.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            head = (
                f"POST /v1/files?filename=a.mp4 HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: {gw.headers['Authorization']}\r\nContent-Type: video/mp4\r\n"
                f"Content-Length: {len(video)}\r\n\r\n"
            )
            writer.write(head.encode() + video[: len(video) // 2])  # the rest never comes
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 15)  # until the server closes
        finally:
            writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["code"] == "request_body_timeout"

        assert (await gw.sql("SELECT count(*) FROM files"))[0][0] == 0

        def no_leftovers() -> bool:  # neither a temporary file nor a stored one
            return not [
                p
                for where in ("tmp", "files")
                for p in (gw.settings.data_dir / where).rglob("*")
                if p.is_file()
            ]

        await eventually(no_leftovers, what="the half upload's temporary file to be removed")
        # The API goes on serving.
        assert (await gw.client.get("/v1/jobs", headers=gw.headers)).status_code == 200
