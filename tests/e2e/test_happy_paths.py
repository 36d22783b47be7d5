"""Both models end to end, through the webhook path and the polling path."""

from __future__ import annotations

import av
import pytest

from tests.support.clips import Clip


async def _download(gw, url: str, **headers: str):  # type: ignore[no-untyped-def]
    return await gw.client.get(url, headers={**gw.headers, **headers})


@pytest.mark.parametrize("public", [True, False], ids=["webhook", "polling"])
async def test_thinksound_end_to_end(
    gateway, clips: dict[str, Clip], public: bool, tmp_path
) -> None:
    async with gateway(public=public) as gw:
        job = await gw.create(
            {
                "model": "thinksound",
                "input": {
                    "video_url": gw.video_url(clips["bounce"]),
                    "prompt": "a rubber ball",
                    "seed": 7,
                },
            }
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        result = done["result"]
        assert result["prompt"] == "a rubber ball"
        video, audio = result["video"], result["audio"]
        assert video["content_type"] == "video/mp4"
        assert video["width"] == 160 and video["height"] == 120
        assert video["audio_codec"] == "aac" and video["sample_rate"] == 44100
        assert abs(video["duration_s"] - 4.0) < 0.05
        assert audio["content_type"] == "audio/mp4" and audio["codec"] == "aac"
        assert abs(audio["duration_s"] - video["duration_s"]) < 0.05
        assert done["upstream"]["request_id"] and done["upstream"]["queue_position"] is None
        assert done["metrics"]["inference_s"] is not None and done["metrics"]["total_s"] > 0
        # The files are ours now: served by the gateway, whole or by range.
        r = await _download(gw, video["url"])
        assert r.status_code == 200 and len(r.content) == video["size_bytes"]
        r = await _download(gw, audio["url"], Range="bytes=0-99")
        assert r.status_code == 206 and len(r.content) == 100
        path = tmp_path / "out.mp4"
        path.write_bytes((await _download(gw, video["url"])).content)
        with av.open(str(path)) as c:
            assert {s.type for s in c.streams} == {"video", "audio"}
        # Exactly one upstream request, sent with or without a webhook as configured.
        submits = gw.emu.submits("fal-ai/thinksound")
        assert len(submits) == 1
        assert ("fal_webhook=" in submits[0]["query"]) == public


async def test_kling_end_to_end_with_mp3(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=False) as gw:
        job = await gw.create(
            {
                "model": "kling-video-to-audio",
                "input": {
                    "video_url": gw.video_url(clips["bounce"]),
                    "prompt": "footsteps",
                    "music_prompt": "soft piano",
                },
            }
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        audio = done["result"]["audio"]
        assert audio["content_type"] == "audio/mpeg" and audio["codec"] == "mp3"
        assert done["result"]["prompt"] == "footsteps"
        assert abs(audio["duration_s"] - 4.0) < 0.1
        assert done["result"]["video"]["audio_codec"] == "aac"


async def test_another_tenants_files_are_404(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True) as gw:
        job = await gw.create(
            {"model": "thinksound-audio", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        assert done["result"]["video"] is None
        url = done["result"]["audio"]["url"]
        _, other_key = await gw.new_tenant("other")
        r = await gw.client.get(url, headers={"Authorization": f"Bearer {other_key}"})
        assert r.status_code == 404 and r.json()["code"] == "file_not_found"
        assert (await gw.client.get(url, headers=gw.headers)).status_code == 200
