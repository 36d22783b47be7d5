"""/docs and /redoc render in a real headless Chromium with the network off but loopback: every
asset comes from the gateway itself (app.kit.api_docs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.config import Settings
from app.main import create_app
from tests.support.serve import serving

CHROMIUM = Path("/usr/bin/chromium")


def _chromium() -> Path:
    """Debian's chromium, installed if missing (Playwright never downloads a browser here)."""
    if CHROMIUM.exists():
        return CHROMIUM
    reason = "chromium is not installed and apt-get could not install it"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{reason} (no apt-get, or not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # noqa: S603
        if done.returncode != 0 and cmd[1] == "install":
            pytest.skip(f"{reason}: {done.stderr.strip()[-300:]}")
    if not CHROMIUM.exists():
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def served(settings: Settings, engine) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with serving(create_app(settings, engine=engine), lifespan="off") as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        # Swagger UI: one block per operation, POST /v1/jobs among them
        ("/docs", ".opblock"),
        # ReDoc: one section per operation
        ("/redoc", "[data-section-id*='operation/']"),
    ],
)
async def test_docs_render_offline(served: str, path: str, rendered: str) -> None:
    chromium = _chromium()
    from playwright.async_api import async_playwright

    left_loopback: list[str] = []
    failed: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(chromium),
            # Belt and braces: no name resolves but loopback, on top of the routing below.
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            page = await browser.new_page()

            async def only_loopback(route, request) -> None:  # type: ignore[no-untyped-def]
                if urlsplit(request.url).hostname == "127.0.0.1" or request.url.startswith(
                    ("data:", "blob:")
                ):
                    await route.continue_()
                else:
                    left_loopback.append(request.url)
                    await route.abort()

            await page.route("**/*", only_loopback)
            page.on("requestfailed", lambda request: failed.append(request.url))
            await page.goto(served + path)
            await page.wait_for_selector(rendered, state="attached", timeout=30_000)
            if path == "/docs":
                await page.get_by_text("/v1/jobs", exact=True).first.wait_for(timeout=10_000)
                assert await page.locator(".opblock").count() > 10
                assert (
                    await page.locator(".opblock-post .opblock-summary-path")
                    .filter(has_text="/v1/jobs")
                    .count()
                    >= 1
                )
            else:
                assert await page.locator(rendered).count() > 10
        finally:
            await browser.close()
    assert left_loopback == []
    assert failed == []
