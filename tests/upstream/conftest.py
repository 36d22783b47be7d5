"""Helpers for driving ``FalClient`` against ``httpx.MockTransport`` (only the network edge is
faked; every byte our client sends goes through httpx's real request building), and against the
real fal emulator over HTTP. Shared by the tests of the client's modules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from app.upstream import FalClient, RetryPolicy
from tests.support.emulator import EmulatorProcess, start_emulator

QUEUE = "https://queue.test"
REST = "https://rest.test"
CDN = "https://cdn.test"
KEY = "key-id:key-secret"

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
MakeClient = Callable[..., FalClient]

ENDPOINT = "fal-ai/kling-video/video-to-audio"
RID = "0b5c7f2e-3d1a-4c1e-9f4e-2f1d2b3c4d5e"
BASE = f"{QUEUE}/fal-ai/kling-video/requests/{RID}"
SUBMITTED = {
    "status": "IN_QUEUE",
    "request_id": RID,
    "response_url": BASE,
    "status_url": f"{BASE}/status",
    "cancel_url": f"{BASE}/cancel",
    "queue_position": 0,
}
FAL_ID = {"x-fal-request-id": RID}


def replies(*items: httpx.Response | Exception):  # type: ignore[no-untyped-def]
    """A handler answering (or failing) with ``items`` in order, the last one repeated."""
    queue = list(items)

    async def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def ok_submit() -> httpx.Response:
    return httpx.Response(200, json=SUBMITTED, headers=FAL_ID)


def nginx(status: int) -> httpx.Response:
    return httpx.Response(status, text=f"<html><center>{status}</center><hr>nginx</html>")


@dataclass
class Recorder:
    """Records the requests a handler saw and the sleeps the client asked for."""

    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    body_chunks: list[list[bytes]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class RecordingTransport(httpx.MockTransport):
    """A MockTransport that first records the request body chunk by chunk, as it was streamed
    (MockTransport alone reads a streamed body whole before the handler sees it)."""

    def __init__(self, handler: Handler, recorder: Recorder) -> None:
        super().__init__(handler)
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chunks = [chunk async for chunk in request.stream]  # type: ignore[union-attr]
        self.recorder.requests.append(request)
        self.recorder.body_chunks.append(chunks)
        self.recorder.bodies.append(b"".join(chunks))
        request.stream = httpx.ByteStream(b"".join(chunks))
        return await super().handle_async_request(request)


def upper_bound(low: float, high: float) -> float:
    """A deterministic ``uniform`` that always picks the top of the jitter range."""
    return high


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_client(recorder: Recorder) -> AsyncIterator[Callable[..., FalClient]]:
    """``make_client(handler, **FalClient kwargs)``: a client whose network is ``handler``."""
    clients: list[httpx.AsyncClient] = []

    def build(handler: Handler, **kwargs: object) -> FalClient:
        http = httpx.AsyncClient(transport=RecordingTransport(handler, recorder))
        clients.append(http)
        options: dict[str, object] = {
            "queue_url": QUEUE,
            "rest_url": REST,
            "cdn_url": CDN,
            "http": http,
            "sleep": recorder.sleep,
            "uniform": upper_bound,
            "submit_policy": RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=8.0),
            "call_policy": RetryPolicy(max_attempts=3, base_delay_s=0.25, max_delay_s=4.0),
        }
        options.update(kwargs)
        return FalClient(KEY, **options)  # type: ignore[arg-type]

    yield build
    for http in clients:
        await http.aclose()


# --- the real emulator ---------------------------------------------------------------------------

KLING = "fal-ai/kling-video/video-to-audio"
KLING_INPUT = {
    "video_url": "https://example.invalid/fast-mode-does-not-fetch.mp4",
    "sound_effect_prompt": "a ball bouncing on a wooden floor",
    "background_music_prompt": "",
}


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """The emulator as a subprocess (``tests/support/emulator.py``, fast mode: no media work);
    each module using it gets its own and resets it before each test."""
    process = start_emulator(tmp_path_factory.mktemp("fal-emulator"), fast=True)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def no_sleep(seconds: float) -> None:
    # The retry policy's pause, replaced: no time passes, the loop only gets its turn.
    await asyncio.sleep(0)


def fal_for(emu: EmulatorProcess, http: httpx.AsyncClient, **options: object) -> FalClient:
    settings: dict[str, object] = {
        "queue_url": emu.base_url,
        "rest_url": emu.base_url,
        "cdn_url": emu.base_url,
        "http": http,
        "sleep": no_sleep,
    }
    settings.update(options)
    return FalClient(emu.fal_key, **settings)  # type: ignore[arg-type]


@pytest.fixture
def fal(emu: EmulatorProcess, http: httpx.AsyncClient) -> FalClient:
    return fal_for(emu, http)
