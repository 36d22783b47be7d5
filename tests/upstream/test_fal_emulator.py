"""FalClient and FalWebhookVerifier against the real fal emulator, over HTTP.

The emulator runs as a subprocess (``tests/support/emulator.py``, fast mode: no media work);
webhooks are received by a small HTTP server in this process and verified against the
emulator's ``/.well-known/jwks.json``. The emulator's request log proves what reached "fal".
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from app.upstream import (
    AmbiguousSubmitError,
    CancelOutcome,
    FalClient,
    FalTimeouts,
    FalWebhookVerifier,
    OutputTooLargeError,
    QueueState,
    QueueStatus,
    ResultCancelled,
    ResultFailed,
    ResultNotFound,
    ResultOk,
    ResultPending,
    TransientUpstreamError,
    UpstreamAccountLockedError,
    UpstreamAuthError,
    UpstreamValidationError,
    WebhookVerificationError,
    default_jwks_url,
)
from tests.support.emulator import EmulatorProcess
from tests.support.waiting import eventually
from tests.upstream.conftest import KLING, KLING_INPUT, fal_for

# --- a webhook receiver --------------------------------------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)

    async def wait_for(self, count: int = 1, timeout: float = 15.0) -> list[Delivery]:
        await eventually(
            lambda: len(self.deliveries) >= count, timeout=timeout, what=f"{count} webhook(s)"
        )
        return list(self.deliveries)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    deliveries: list[Delivery] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            deliveries.append(Delivery(self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(url=f"http://127.0.0.1:{server.server_port}", deliveries=deliveries)
    finally:
        server.shutdown()
        server.server_close()


# --- the emulator and clients (the emulator, fal and fal_for are in conftest) --------------------


@pytest.fixture(autouse=True)
def fresh_emulator(emu: EmulatorProcess, receiver: Receiver) -> None:
    emu.reset()
    receiver.deliveries.clear()


async def until_completed(fal: FalClient, status_url: str, timeout: float = 15.0) -> QueueStatus:
    async def completed() -> QueueStatus | None:
        status = await fal.status(status_url)
        return status if status.completed else None

    return await eventually(completed, timeout=timeout, what="the request to complete")


# --- queue ---------------------------------------------------------------------------------------


async def test_submit_status_result_round_trip(
    fal: FalClient, emu: EmulatorProcess, receiver: Receiver
) -> None:
    submitted = await fal.submit(
        KLING, KLING_INPUT, webhook_url=f"{receiver.url}/hook?job=j1", start_timeout_s=60
    )
    # Status and result live under owner/app only; the client used the returned URLs.
    assert "/fal-ai/kling-video/requests/" in submitted.status_url
    assert "video-to-audio" not in submitted.status_url
    assert submitted.gateway_request_id == submitted.request_id

    status = await until_completed(fal, submitted.status_url)
    assert status.status is QueueState.COMPLETED
    assert not status.failed
    assert status.inference_time is not None
    assert any("Fast mode" in line.message for line in status.logs)

    outcome = await fal.result(submitted.response_url)
    assert isinstance(outcome, ResultOk)
    assert outcome.request_id == submitted.request_id
    assert {"video", "audio"} <= outcome.output.keys()

    seen = emu.job(submitted.request_id)
    assert seen["fal_headers"]["x-fal-request-timeout"] == "60.0"
    assert seen["fal_headers"]["x-fal-request-start-timeout"] == "60.0"
    assert seen["fal_headers"]["x-fal-no-retry"] == "1"
    assert seen["webhook_url"] == f"{receiver.url}/hook?job=j1"
    assert seen["input"] == KLING_INPUT


async def test_real_webhook_signature_verifies_against_the_emulator_jwks(
    fal: FalClient, emu: EmulatorProcess, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    submitted = await fal.submit(KLING, KLING_INPUT, webhook_url=f"{receiver.url}/hook?job=j2")
    (delivery,) = await receiver.wait_for(1)
    assert delivery.path == "/hook?job=j2"

    verifier = FalWebhookVerifier(default_jwks_url(emu.base_url), http)
    verified = await verifier.verify(delivery.headers, delivery.body)
    assert verified.request_id == submitted.request_id
    assert verified.status == "OK"
    assert verified.body.outcome == "ok"
    outcome = await fal.result(submitted.response_url)
    assert isinstance(outcome, ResultOk) and verified.payload == outcome.output

    tampered = delivery.body.replace(b'"OK"', b'"ERROR"')
    with pytest.raises(WebhookVerificationError) as caught:
        await verifier.verify(delivery.headers, tampered)
    assert caught.value.reason == "bad_signature"


async def test_emulator_forged_signature_is_rejected(
    fal: FalClient, emu: EmulatorProcess, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    emu.control(webhook_bad_signature_rate=1.0)
    await fal.submit(KLING, KLING_INPUT, webhook_url=f"{receiver.url}/hook")
    (delivery,) = await receiver.wait_for(1)
    verifier = FalWebhookVerifier(default_jwks_url(emu.base_url), http)
    with pytest.raises(WebhookVerificationError) as caught:
        await verifier.verify(delivery.headers, delivery.body)
    assert caught.value.reason == "bad_signature"


async def test_cancel_while_queued_then_result_is_cancelled(
    fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(queue_wait=30)
    submitted = await fal.submit(KLING, KLING_INPUT)
    status = await fal.status(submitted.status_url)
    assert status.status is QueueState.IN_QUEUE
    assert status.queue_position == 0
    assert isinstance(await fal.result(submitted.response_url), ResultPending)

    assert await fal.cancel(submitted.cancel_url) is CancelOutcome.CANCELLATION_REQUESTED
    assert await fal.cancel(submitted.cancel_url) is CancelOutcome.ALREADY_COMPLETED
    outcome = await fal.result(submitted.response_url)
    assert isinstance(outcome, ResultCancelled)
    assert outcome.error_type == "client_cancelled"


async def test_cancel_while_running(fal: FalClient, emu: EmulatorProcess) -> None:
    emu.control(run_time=30)
    submitted = await fal.submit(KLING, KLING_INPUT)

    async def running() -> bool:
        return (await fal.status(submitted.status_url)).status is QueueState.IN_PROGRESS

    await eventually(running, what="the request to start")
    assert await fal.cancel(submitted.cancel_url) is CancelOutcome.CANCELLATION_REQUESTED
    await until_completed(fal, submitted.status_url)
    assert isinstance(await fal.result(submitted.response_url), ResultCancelled)


async def test_cancel_unknown_request(fal: FalClient, emu: EmulatorProcess) -> None:
    url = f"{emu.base_url}/fal-ai/kling-video/requests/00000000-0000-0000-0000-000000000000/cancel"
    assert await fal.cancel(url) is CancelOutcome.NOT_FOUND
    assert isinstance(await fal.result(url.removesuffix("/cancel")), ResultNotFound)


async def test_start_timeout_fires_as_a_final_unretryable_failure(
    fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(queue_wait=30)
    submitted = await fal.submit(KLING, KLING_INPUT, start_timeout_s=1.5)
    status = await until_completed(fal, submitted.status_url)
    assert status.error_type == "request_timeout"
    outcome = await fal.result(submitted.response_url)
    assert isinstance(outcome, ResultFailed)
    assert (outcome.status_code, outcome.error_type, outcome.retryable) == (
        504,
        "request_timeout",
        False,
    )


async def test_runner_failure_is_a_final_retryable_failure_fetched_once(
    fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(failure_rates={"runner_disconnected": 1.0})
    submitted = await fal.submit(KLING, KLING_INPUT)
    status = await until_completed(fal, submitted.status_url)
    assert status.failed and status.error == "Runner disconnected"
    outcome = await fal.result(submitted.response_url)
    assert isinstance(outcome, ResultFailed)
    assert (outcome.status_code, outcome.error_type, outcome.retryable) == (
        503,
        "runner_disconnected",
        True,
    )
    gets = emu.requests(method="GET", request_id=submitted.request_id)
    assert len([g for g in gets if not g["path"].endswith("/status")]) == 1


async def test_submit_validation_error(fal: FalClient, emu: EmulatorProcess) -> None:
    with pytest.raises(UpstreamValidationError) as caught:
        await fal.submit(KLING, {"sound_effect_prompt": "x"})
    assert caught.value.detail[0]["loc"] == ["body", "video_url"]


async def test_wrong_key_and_locked_account(emu: EmulatorProcess, http: httpx.AsyncClient) -> None:
    emu.control(keys=[emu.fal_key])
    with pytest.raises(UpstreamAuthError):
        await FalClient(
            "not-the-key", queue_url=emu.base_url, rest_url=emu.base_url, http=http
        ).submit(KLING, KLING_INPUT)
    emu.control(account_locked=True)
    with pytest.raises(UpstreamAccountLockedError):
        await fal_for(emu, http).submit(KLING, KLING_INPUT)


async def test_ingress_errors_are_retried_and_create_nothing(
    fal: FalClient, emu: EmulatorProcess
) -> None:
    emu.control(ingress_error_rates={"503": 1.0})
    with pytest.raises(TransientUpstreamError):
        await fal.submit(KLING, KLING_INPUT)
    submits = emu.submits(model=KLING)
    assert len(submits) == 4  # the default submit policy's attempts
    assert all(entry["request_id"] is None for entry in submits)  # no request was created


async def test_ambiguous_submit_is_not_retried_and_its_webhook_still_names_the_job(
    emu: EmulatorProcess, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=2.0)
    fal = fal_for(emu, http, timeouts=FalTimeouts(read=0.5))
    with pytest.raises(AmbiguousSubmitError):
        await fal.submit(KLING, KLING_INPUT, webhook_url=f"{receiver.url}/hook?job=lost")

    (submit,) = emu.submits(model=KLING)  # exactly one request reached "fal"
    (delivery,) = await receiver.wait_for(1)
    assert delivery.path == "/hook?job=lost"  # the gateway can attribute it to its job
    verified = await FalWebhookVerifier(default_jwks_url(emu.base_url), http).verify(
        delivery.headers, delivery.body
    )
    assert verified.request_id == submit["request_id"]


# --- storage -------------------------------------------------------------------------------------


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(300_000))
    return path


async def test_upload_via_cdn_then_download(
    fal: FalClient, emu: EmulatorProcess, video: Path, tmp_path: Path
) -> None:
    url = await fal.upload_file(video, "video/mp4", "clip.mp4")
    assert url.startswith(f"{emu.base_url}/files/")
    assert [e["path"] for e in emu.requests(method="POST")] == [
        "/storage/auth/token",
        "/files/upload",
    ]

    dest = tmp_path / "back.mp4"
    size, content_type = await fal.download(url, dest, max_bytes=1_000_000)
    assert size == video.stat().st_size
    assert content_type == "video/mp4"
    assert dest.read_bytes() == video.read_bytes()

    with pytest.raises(OutputTooLargeError):
        await fal.download(url, tmp_path / "small.mp4", max_bytes=1000)
    assert not (tmp_path / "small.mp4").exists()


async def test_upload_streamed_chunks(fal: FalClient, emu: EmulatorProcess, tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(4):
            yield bytes([index]) * 50_000

    url = await fal.upload_file(chunks(), "audio/mpeg", "a.mp3")
    size, _ = await fal.download(url, tmp_path / "a.mp3", max_bytes=1_000_000)
    assert size == 200_000
    assert (tmp_path / "a.mp3").read_bytes() == b"".join(bytes([i]) * 50_000 for i in range(4))


async def test_upload_falls_back_to_initiate_and_signed_put(
    emu: EmulatorProcess, http: httpx.AsyncClient, video: Path, tmp_path: Path
) -> None:
    # A CDN host without /files/upload (the emulator answers 404 there): the fallback flow runs.
    fal = fal_for(emu, http, cdn_url=f"{emu.base_url}/no-cdn-here")
    url = await fal.upload_file(video, "video/mp4", "clip.mp4")
    paths = [e["path"] for e in emu.requests() if e["method"] in ("POST", "PUT")]
    assert paths[-2] == "/storage/upload/initiate"
    assert paths[-1].startswith("/storage/upload/")
    size, _ = await fal.download(url, tmp_path / "x.mp4", max_bytes=1_000_000)
    assert size == video.stat().st_size
