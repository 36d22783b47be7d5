"""The models: fal's input rules (422 shapes), real outputs, the Kling trap, input fetching."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.support.clips import Clip, make_bouncing_square
from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import run

KLING = "fal-ai/kling-video/video-to-audio"
THINKSOUND = "fal-ai/thinksound"
THINKSOUND_AUDIO = "fal-ai/thinksound/audio"
MMAUDIO = "fal-ai/mmaudio-v2"
CAR_SFX = "Car tires screech as they accelerate in a drag race"
CAR_MUSIC = "intense car race"


def _probe(client: httpx.Client, url: str, tmp_path: Path) -> dict[str, Any]:
    """Download a File and describe its streams: {type: (codec, duration_s)}."""
    data = client.get(url).content
    path = tmp_path / url.rsplit("/", 1)[-1]
    path.write_bytes(data)
    streams: dict[str, Any] = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            duration = float(stream.duration * stream.time_base) if stream.duration else None
            streams[stream.type] = (stream.codec_context.name, duration)
    return streams


def _assert_file(file: dict[str, Any], content_type: str, suffix: str) -> None:
    assert set(file) == {"url", "content_type", "file_name", "file_size"}
    assert file["content_type"] == content_type
    assert file["file_name"].endswith(suffix)
    assert file["file_size"] > 1000


def _single_422(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and len(detail) == 1
    item: dict[str, Any] = detail[0]
    assert {"loc", "msg", "type"} <= set(item)
    return item


# --- ThinkSound ------------------------------------------------------------------------------
def test_thinksound_returns_the_video_with_audio_and_a_described_prompt(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, clip: Clip, tmp_path: Path
) -> None:
    _, result = run(client, emu.base_url, THINKSOUND, {"video_url": clip_url})
    assert result.status_code == 200, result.text
    body = result.json()
    assert set(body) == {"video", "prompt"}
    _assert_file(body["video"], "video/mp4", ".mp4")
    assert body["prompt"]  # extracted from the video when none is given
    streams = _probe(client, body["video"]["url"], tmp_path)
    assert streams["video"][0] == "h264"
    assert streams["audio"][0] == "aac"
    assert streams["audio"][1] == pytest.approx(clip.duration_s, abs=0.05)


def test_thinksound_echoes_the_given_prompt(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str
) -> None:
    _, result = run(client, emu.base_url, THINKSOUND, {"video_url": clip_url, "prompt": "rain"})
    assert result.json()["prompt"] == "rain"


def test_thinksound_audio_returns_a_wav(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, clip: Clip, tmp_path: Path
) -> None:
    _, result = run(client, emu.base_url, THINKSOUND_AUDIO, {"video_url": clip_url, "seed": 3})
    body = result.json()
    assert set(body) == {"audio", "prompt"}
    _assert_file(body["audio"], "audio/wav", ".wav")
    streams = _probe(client, body["audio"]["url"], tmp_path)
    assert streams["audio"][0] == "pcm_s16le"


def test_thinksound_shortfall_knob_shortens_the_audio(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, clip: Clip, tmp_path: Path
) -> None:
    emu.control(thinksound_shortfall_s=1.0)
    _, result = run(client, emu.base_url, THINKSOUND_AUDIO, {"video_url": clip_url})
    streams = _probe(client, result.json()["audio"]["url"], tmp_path)
    assert streams["audio"][1] == pytest.approx(clip.duration_s - 1.0, abs=0.05)


@pytest.mark.parametrize(
    ("payload", "loc", "error_type"),
    [
        ({}, "video_url", "missing"),
        ({"video_url": "u", "num_inference_steps": 1}, "num_inference_steps", "greater_than_equal"),
        ({"video_url": "u", "num_inference_steps": 101}, "num_inference_steps", "less_than_equal"),
        ({"video_url": "u", "cfg_scale": 0.5}, "cfg_scale", "greater_than_equal"),
        ({"video_url": "u", "cfg_scale": 21}, "cfg_scale", "less_than_equal"),
        ({"video_url": "u", "seed": "abc"}, "seed", "int_parsing"),
    ],
)
def test_thinksound_schema_errors_are_422_at_submit(
    emu: EmulatorProcess,
    client: httpx.Client,
    payload: dict[str, Any],
    loc: str,
    error_type: str,
) -> None:
    item = _single_422(client.post(f"{emu.base_url}/{THINKSOUND}", json=payload))
    assert item["loc"] == ["body", loc]
    assert item["type"] == error_type
    assert emu.submits(THINKSOUND)[0]["request_id"] is None  # never queued


def test_schema_errors_come_from_the_runner_when_told(
    emu: EmulatorProcess, client: httpx.Client
) -> None:
    emu.control(validate_at_submit=False)
    _, result = run(client, emu.base_url, THINKSOUND, {"num_inference_steps": 500})
    assert result.status_code == 422
    types = {item["type"] for item in result.json()["detail"]}
    assert types == {"missing", "less_than_equal"}


# --- Kling -----------------------------------------------------------------------------------
def test_kling_returns_video_and_mp3(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, clip: Clip, tmp_path: Path
) -> None:
    payload = {
        "video_url": clip_url,
        "sound_effect_prompt": "a ball bouncing",
        "background_music_prompt": "soft piano",
        "asmr_mode": True,
    }
    handle, result = run(client, emu.base_url, KLING, payload)
    body = result.json()
    assert set(body) == {"video", "audio"}
    _assert_file(body["video"], "video/mp4", ".mp4")
    _assert_file(body["audio"], "audio/mpeg", ".mp3")
    assert _probe(client, body["audio"]["url"], tmp_path)["audio"][0].startswith("mp3")
    video = _probe(client, body["video"]["url"], tmp_path)
    assert set(video) == {"video", "audio"}
    effective = emu.job(handle["request_id"])["effective_input"]
    assert effective["sound_effect_prompt"] == "a ball bouncing"
    assert effective["asmr_mode"] is True


def test_kling_fills_in_the_car_race_prompts_when_omitted(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str
) -> None:
    handle, result = run(client, emu.base_url, KLING, {"video_url": clip_url})
    assert result.status_code == 200
    job = emu.job(handle["request_id"])
    assert job["effective_input"]["sound_effect_prompt"] == CAR_SFX
    assert job["effective_input"]["background_music_prompt"] == CAR_MUSIC
    status = client.get(handle["status_url"], params={"logs": 1}).json()
    messages = " ".join(item["message"] for item in status["logs"])
    assert CAR_SFX in messages and CAR_MUSIC in messages


def test_kling_null_prompts_also_become_the_car_race(
    emu: EmulatorProcess, client: httpx.Client
) -> None:
    emu.control(run_time=5)  # no need to run: the effective input is known at submit
    handle = client.post(
        f"{emu.base_url}/{KLING}",
        json={"video_url": "x", "sound_effect_prompt": None, "background_music_prompt": None},
    ).json()
    effective = emu.job(handle["request_id"])["effective_input"]
    assert (effective["sound_effect_prompt"], effective["background_music_prompt"]) == (
        CAR_SFX,
        CAR_MUSIC,
    )


@pytest.mark.parametrize("field", ["sound_effect_prompt", "background_music_prompt"])
def test_kling_prompts_over_200_chars_are_422(
    emu: EmulatorProcess, client: httpx.Client, field: str
) -> None:
    response = client.post(f"{emu.base_url}/{KLING}", json={"video_url": "u", field: "x" * 201})
    item = _single_422(response)
    assert (item["loc"], item["type"]) == (["body", field], "string_too_long")
    ok = client.post(f"{emu.base_url}/{KLING}", json={"video_url": "u", field: "x" * 200})
    assert ok.status_code == 200


def test_kling_rejects_webm_renamed_mp4_by_its_real_container(
    emu: EmulatorProcess, client: httpx.Client, clips_dir: Path
) -> None:
    webm = make_bouncing_square(
        clips_dir / "real.webm", duration_s=3.5, width=96, height=64, container="webm"
    )
    disguised = clips_dir / "disguised.mp4"
    disguised.write_bytes(webm.path.read_bytes())
    url = emu.upload(disguised, "video/mp4")
    _, result = run(client, emu.base_url, KLING, {"video_url": url})
    item = _single_422(result)
    assert (item["loc"], item["type"]) == (["body", "video_url"], "unsupported_video_format")


def test_kling_accepts_mov(emu: EmulatorProcess, client: httpx.Client, clips_dir: Path) -> None:
    mov = make_bouncing_square(
        clips_dir / "clip.mov", duration_s=3.2, width=96, height=64, container="mov"
    )
    _, result = run(client, emu.base_url, KLING, {"video_url": emu.upload(mov.path)})
    assert result.status_code == 200, result.text


@pytest.mark.parametrize(
    ("seconds", "error_type"),
    [(2.5, "video_duration_too_short"), (20.5, "video_duration_too_long")],
)
def test_kling_duration_limits(
    emu: EmulatorProcess,
    client: httpx.Client,
    clips_dir: Path,
    seconds: float,
    error_type: str,
) -> None:
    made = make_bouncing_square(
        clips_dir / f"len{seconds}.mp4", duration_s=seconds, fps=8, width=64, height=48
    )
    _, result = run(client, emu.base_url, KLING, {"video_url": emu.upload(made.path)})
    item = _single_422(result)
    assert (item["loc"], item["type"]) == (["body", "video_url"], error_type)
    status = client.get(_status_url(result)).json()
    assert status["status"] == "COMPLETED"


def _status_url(result: httpx.Response) -> str:
    return f"{result.request.url}/status"


# --- MMAudio ---------------------------------------------------------------------------------
def test_mmaudio_requires_a_prompt_and_renders_the_requested_duration(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, tmp_path: Path
) -> None:
    item = _single_422(client.post(f"{emu.base_url}/{MMAUDIO}", json={"video_url": clip_url}))
    assert (item["loc"], item["type"]) == (["body", "prompt"], "missing")
    payload = {"video_url": clip_url, "prompt": "footsteps", "duration": 2}
    _, result = run(client, emu.base_url, MMAUDIO, payload)
    streams = _probe(client, result.json()["video"]["url"], tmp_path)
    assert streams["audio"][1] == pytest.approx(2.0, abs=0.05)


# --- input fetching --------------------------------------------------------------------------
def test_data_uri_input_is_accepted(emu: EmulatorProcess, client: httpx.Client, clip: Clip) -> None:
    data_uri = "data:video/mp4;base64," + base64.b64encode(clip.path.read_bytes()).decode()
    _, result = run(client, emu.base_url, THINKSOUND_AUDIO, {"video_url": data_uri})
    assert result.status_code == 200, result.text


@pytest.mark.parametrize(
    "url",
    [
        "{base}/files/koala/missing.mp4",
        "http://127.0.0.1:9/closed-port.mp4",
        "ftp://example.invalid/clip.mp4",
        "not a url",
    ],
)
def test_fetch_failure_is_file_download_error(
    emu: EmulatorProcess, client: httpx.Client, url: str
) -> None:
    _, result = run(client, emu.base_url, THINKSOUND, {"video_url": url.format(base=emu.base_url)})
    item = _single_422(result)
    assert (item["loc"], item["type"]) == (["body", "video_url"], "file_download_error")


@pytest.fixture
def oversized_url() -> Iterator[str]:
    """A server that announces a 101 MB video (and never sends it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(101 * 1024 * 1024))
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/big.mp4"
    server.shutdown()
    server.server_close()


def test_kling_input_over_100_mb_is_file_too_large(
    emu: EmulatorProcess, client: httpx.Client, oversized_url: str
) -> None:
    _, result = run(client, emu.base_url, KLING, {"video_url": oversized_url})
    item = _single_422(result)
    assert (item["loc"], item["type"]) == (["body", "video_url"], "file_too_large")


# --- HunyuanVideo-Foley, ControlFoley, Mirelo, Sonilo ----------------------------------------
HUNYUAN = "fal-ai/hunyuan-video-foley"
CONTROLFOLEY = "fal-ai/controlfoley"
MIRELO = "mirelo-ai/sfx-v1.5/video-to-audio"
SONILO = "sonilo/v1.1/video-to-music"


def test_hunyuan_requires_a_text_prompt_and_returns_the_video_with_audio(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, clip: Clip, tmp_path: Path
) -> None:
    item = _single_422(client.post(f"{emu.base_url}/{HUNYUAN}", json={"video_url": clip_url}))
    assert (item["loc"], item["type"]) == (["body", "text_prompt"], "missing")
    bad = {"video_url": clip_url, "text_prompt": "steps", "guidance_scale": 11}
    item = _single_422(client.post(f"{emu.base_url}/{HUNYUAN}", json=bad))
    assert (item["loc"], item["type"]) == (["body", "guidance_scale"], "less_than_equal")
    _, result = run(client, emu.base_url, HUNYUAN, {"video_url": clip_url, "text_prompt": "steps"})
    body = result.json()
    assert set(body) == {"video"}
    streams = _probe(client, body["video"]["url"], tmp_path)
    assert streams["audio"][1] == pytest.approx(clip.duration_s, abs=0.05)


def test_controlfoley_takes_a_2_to_4_s_reference_clip(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, tmp_path: Path
) -> None:
    from tests.support.clips import make_tone

    good = emu.upload(make_tone(tmp_path / "ref.wav", 3.0), "audio/wav")
    payload = {"video_url": clip_url, "reference_audio_url": good, "duration": 4.0}
    _, result = run(client, emu.base_url, CONTROLFOLEY, payload)
    assert result.status_code == 200, result.text
    streams = _probe(client, result.json()["video"]["url"], tmp_path)
    assert streams["audio"][1] == pytest.approx(4.0, abs=0.05)

    long_clip = emu.upload(make_tone(tmp_path / "long.wav", 5.0), "audio/wav")
    _, result = run(
        client, emu.base_url, CONTROLFOLEY, {**payload, "reference_audio_url": long_clip}
    )
    item = _single_422(result)
    assert (item["loc"], item["type"]) == (
        ["body", "reference_audio_url"],
        "audio_duration_too_long",
    )
    short = emu.upload(make_tone(tmp_path / "short.wav", 1.0), "audio/wav")
    _, result = run(client, emu.base_url, CONTROLFOLEY, {**payload, "reference_audio_url": short})
    assert _single_422(result)["type"] == "audio_duration_too_short"


def test_controlfoley_defaults_to_8_s_of_audio(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, tmp_path: Path
) -> None:
    _, result = run(client, emu.base_url, CONTROLFOLEY, {"video_url": clip_url})
    streams = _probe(client, result.json()["video"]["url"], tmp_path)
    assert streams["audio"][1] == pytest.approx(8.0, abs=0.05)  # the trap: not the video's 4 s


def test_mirelo_returns_one_wav_per_sample(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, tmp_path: Path
) -> None:
    item = _single_422(
        client.post(f"{emu.base_url}/{MIRELO}", json={"video_url": clip_url, "num_samples": 1})
    )
    assert (item["loc"], item["type"]) == (["body", "num_samples"], "greater_than_equal")
    payload = {"video_url": clip_url, "num_samples": 3, "duration": 2.5, "start_offset": 1.0}
    _, result = run(client, emu.base_url, MIRELO, payload)
    files = result.json()["audio"]
    assert isinstance(files, list) and len(files) == 3
    digests = set()
    for file in files:
        _assert_file(file, "audio/wav", ".wav")
        streams = _probe(client, file["url"], tmp_path)
        assert streams["audio"][1] == pytest.approx(2.5, abs=0.01)
        digests.add(client.get(file["url"]).content)
    assert len(digests) == 3  # three takes, not one thrice
    _, result = run(client, emu.base_url, MIRELO, {**payload, "start_offset": 2.0})
    item = _single_422(result)  # 2 s + 2.5 s runs past the 4 s video
    assert (item["loc"], item["type"]) == (["body", "duration"], "value_error")


def test_sonilo_scores_the_rest_of_the_video_per_sample(
    emu: EmulatorProcess, client: httpx.Client, clip_url: str, clip: Clip, tmp_path: Path
) -> None:
    job, result = run(
        client, emu.base_url, SONILO, {"video_url": clip_url, "num_samples": 2, "start_offset": 1}
    )
    body = result.json()
    assert body["audio"] == body["audios"][0] and len(body["audios"]) == 2
    for file in body["audios"]:
        _assert_file(file, "audio/mp4", ".m4a")
        streams = _probe(client, file["url"], tmp_path)
        assert streams["audio"][1] == pytest.approx(clip.duration_s - 1, abs=0.05)
    # billed what was scored: 3 s x 2 samples
    assert emu.job(job["request_id"])["usage"]["unit_quantity"] == pytest.approx(6.0, abs=0.01)
    item = _single_422(
        client.post(f"{emu.base_url}/{SONILO}", json={"video_url": clip_url, "num_samples": 4})
    )
    assert (item["loc"], item["type"]) == (["body", "num_samples"], "less_than_equal")
