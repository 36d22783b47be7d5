"""Fixtures for the emulator's tests: real subprocess servers, a webhook sink, test clips.

- `emu`: a media-producing emulator (session-scoped process), reset before each test.
- `fast_emu`: a `--fast` emulator (cached outputs, no media work), reset before each test.
Both start at concurrency 4 and seed 0; a test changes knobs with `emu.control(...)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.clips import Clip, make_bouncing_square
from tests.support.emulator import EmulatorProcess, start_emulator
from tests.support.webhook_sink import WebhookSink


def _stop_clean(emu: EmulatorProcess) -> None:
    emu.stop()
    log = emu.log_path.read_text()
    assert "Traceback" not in log, f"the emulator logged an error:\n{log}"


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = start_emulator(tmp_path_factory.mktemp("emulator"), concurrency=4, seed=0)
    yield emu
    _stop_clean(emu)


@pytest.fixture(scope="session")
def fast_emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = start_emulator(tmp_path_factory.mktemp("emulator-fast"), fast=True, seed=0)
    yield emu
    _stop_clean(emu)


@pytest.fixture
def emu(emulator_server: EmulatorProcess) -> EmulatorProcess:
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def fast_emu(fast_emulator_server: EmulatorProcess) -> EmulatorProcess:
    fast_emulator_server.reset()
    return fast_emulator_server


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def clip(clips_dir: Path) -> Clip:
    """4 s, 160x120, 24 fps MP4 of a bouncing square."""
    return make_bouncing_square(clips_dir / "bounce.mp4", duration_s=4.0, width=160, height=120)


@pytest.fixture(scope="session")
def clip_url(emulator_server: EmulatorProcess, clip: Clip) -> str:
    return emulator_server.upload(clip.path, "video/mp4")


@pytest.fixture
def client(emu: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(headers=emu.auth_headers, timeout=30) as http:
        yield http


@pytest.fixture
def fast_client(fast_emu: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(headers=fast_emu.auth_headers, timeout=30) as http:
        yield http
