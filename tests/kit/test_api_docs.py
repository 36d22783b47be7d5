"""/docs and /redoc render in a real headless Chromium with the network off but loopback: every
asset comes from the gateway itself (app.kit.api_docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config import Settings
from app.main import create_app
from tests.support.browser import LOOPBACK_ONLY_ARGS, chromium, only_loopback
from tests.support.serve import serving


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
    executable = chromium()
    from playwright.async_api import async_playwright

    left_loopback: list[str] = []
    failed: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(executable), args=LOOPBACK_ONLY_ARGS)
        try:
            page = await browser.new_page()
            await only_loopback(page, left_loopback)
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
