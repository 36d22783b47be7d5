"""Output downloads go through the outbound guard: an output URL from fal cannot redirect the
worker to an internal address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.config import Settings
from app.jobs.steps.finalize import download_output
from app.upstream.errors import OutputUnavailableError, TransientUpstreamError
from tests.netguard.conftest import LocalServer, redirect_to, respond, serve_bytes


@pytest.fixture
async def origin() -> AsyncIterator[LocalServer]:
    """Where fal's CDN would be: a local HTTP server the test scripts."""
    srv = LocalServer()
    await srv.start()
    yield srv
    await srv.stop()


async def test_an_output_is_downloaded_under_the_outbound_rules(
    origin: LocalServer, settings: Settings, tmp_path: Path
) -> None:
    origin.route("/out.mp4", serve_bytes(b"x" * 1000))
    dest = tmp_path / "video.bin"
    await download_output(
        SimpleNamespace(settings=settings), origin.url("127.0.0.1", "/out.mp4"), dest
    )  # type: ignore[arg-type]
    assert dest.read_bytes() == b"x" * 1000


async def test_a_redirect_to_an_internal_address_is_refused(
    origin: LocalServer, settings: Settings, tmp_path: Path
) -> None:
    origin.route("/out.mp4", redirect_to("http://169.254.169.254/latest/meta-data/"))
    with pytest.raises(OutputUnavailableError, match=r"refused|not allowed|metadata|link"):
        await download_output(
            SimpleNamespace(settings=settings),  # type: ignore[arg-type]
            origin.url("127.0.0.1", "/out.mp4"),
            tmp_path / "video.bin",
        )
    assert not (tmp_path / "video.bin").exists()
    assert origin.paths() == ["/out.mp4"]  # the redirect was not followed


async def test_a_server_error_is_retried_later(
    origin: LocalServer, settings: Settings, tmp_path: Path
) -> None:
    async def failing(seen, writer) -> None:  # type: ignore[no-untyped-def]
        await respond(writer, 503, body=b"busy")

    origin.route("/out.mp4", failing)
    with pytest.raises(TransientUpstreamError):
        await download_output(
            SimpleNamespace(settings=settings),  # type: ignore[arg-type]
            origin.url("127.0.0.1", "/out.mp4"),
            tmp_path / "video.bin",
        )
