"""Conformance with fal's official Python client (`fal-client`), pointed at the emulator."""

from __future__ import annotations

from pathlib import Path

import fal_client
import fal_client.client as fal_module
import pytest

from tests.support.clips import Clip
from tests.support.emulator import EmulatorProcess
from tests.support.waiting import eventually_sync
from tests.support.webhook_sink import WebhookSink

KLING = "fal-ai/kling-video/video-to-audio"
THINKSOUND = "fal-ai/thinksound"


@pytest.fixture
def official(fast_emu: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> EmulatorProcess:
    base = fast_emu.base_url
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{base}/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", f"{base}/")
    monkeypatch.setattr(fal_module, "REST_URL", base)
    monkeypatch.setattr(fal_module, "CDN_URL", base)
    monkeypatch.setenv("FAL_KEY", fast_emu.fal_key)
    return fast_emu


def test_sync_client_upload_submit_status_result(
    official: EmulatorProcess, sink: WebhookSink, clip: Clip
) -> None:
    client = fal_client.SyncClient()
    url = client.upload_file(clip.path)
    assert url.startswith(f"{official.base_url}/files/")
    fallback = client.upload(b"abc", "text/plain", "a.txt", repository="fal")
    assert fallback.startswith(f"{official.base_url}/files/")

    official.control(run_time=0.4, log_interval_s=0.1)
    handle = client.submit(KLING, {"video_url": url}, webhook_url=sink.url)
    assert handle.request_id
    seen = [type(status).__name__ for status in handle.iter_events(with_logs=True, interval=0.05)]
    assert seen[-1] == "Completed" and "InProgress" in seen
    completed = handle.status(with_logs=True)
    assert isinstance(completed, fal_client.Completed)
    assert completed.metrics["inference_time"] >= 0.4
    assert completed.logs
    result = handle.get()
    assert set(result) == {"video", "audio"}
    hook = sink.wait_for(1)[0].json()
    assert (hook["request_id"], hook["status"], hook["payload"]) == (
        handle.request_id,
        "OK",
        result,
    )
    assert client.result(KLING, handle.request_id) == result
    status = client.status(KLING, handle.request_id, with_logs=False)
    assert isinstance(status, fal_client.Completed) and status.logs is None


def test_sync_client_queued_status_and_cancel(official: EmulatorProcess) -> None:
    client = fal_client.SyncClient()
    official.control(concurrency=1, run_time=2.0)
    running = client.submit(THINKSOUND, {"video_url": "x"})
    queued = client.submit(THINKSOUND, {"video_url": "x"})
    status = queued.status()
    assert isinstance(status, fal_client.Queued) and status.position == 0
    queued.cancel()
    # Once the cancel has ended the queued request, the running one is still running.
    eventually_sync(lambda: isinstance(queued.status(), fal_client.Completed), what="the cancel")
    assert isinstance(running.status(), fal_client.InProgress)
    running.cancel()
    with pytest.raises(fal_client.client.FalClientHTTPError) as raised:
        running.get()
    assert raised.value.status_code == 499
    assert raised.value.error_type == "client_cancelled"
    with pytest.raises(fal_client.client.FalClientHTTPError) as again:
        client.cancel(THINKSOUND, running.request_id)  # already completed
    assert again.value.status_code == 400


def test_sync_client_sees_validation_errors(official: EmulatorProcess) -> None:
    client = fal_client.SyncClient()
    with pytest.raises(fal_client.client.FalClientHTTPError) as raised:
        client.submit(THINKSOUND, {"video_url": "x", "cfg_scale": 100})
    assert raised.value.status_code == 422


def test_sync_client_start_timeout_is_not_retried(official: EmulatorProcess) -> None:
    client = fal_client.SyncClient()
    official.control(concurrency=1, run_time=2.0)
    client.submit(THINKSOUND, {"video_url": "x"})
    late = client.submit(THINKSOUND, {"video_url": "x"}, start_timeout=1.1)
    with pytest.raises(fal_client.client.FalClientHTTPError) as raised:
        late.get()
    assert raised.value.status_code == 504
    assert raised.value.error_type == "request_timeout"


async def test_async_client_upload_submit_status_result_cancel(
    official: EmulatorProcess, sink: WebhookSink, clip: Clip, tmp_path: Path
) -> None:
    client = fal_client.AsyncClient()
    url = await client.upload_file(clip.path)
    assert url.startswith(f"{official.base_url}/files/")
    official.control(run_time=0.3, log_interval_s=0.1)
    handle = await client.submit(THINKSOUND, {"video_url": url}, webhook_url=sink.url)
    statuses = [s async for s in handle.iter_events(with_logs=True, interval=0.05)]
    assert isinstance(statuses[-1], fal_client.Completed)
    result = await handle.get()
    assert set(result) == {"video", "prompt"}
    hooks = await sink.wait_for_async(1)
    assert hooks[0].json()["payload"] == result

    official.control(run_time=3.0)
    slow = await client.submit(THINKSOUND, {"video_url": url})
    while not isinstance(await slow.status(), fal_client.InProgress):
        pass
    await slow.cancel()
    with pytest.raises(fal_client.client.FalClientHTTPError) as raised:
        await slow.get()
    assert raised.value.status_code == 499
