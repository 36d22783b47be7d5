"""The emulator's own docs page works without internet: its assets are served locally."""

from __future__ import annotations

import re

import httpx

from tests.support.emulator import EmulatorProcess


def test_the_docs_page_loads_nothing_from_elsewhere(emu: EmulatorProcess) -> None:
    page = httpx.get(f"{emu.base_url}/_emulator/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui" in page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources, page.text
    assert all(s.startswith("/_emulator/") for s in sources), sources  # nothing off this host
    assert "/_emulator/openapi.json" in page.text
    for source in sources:
        asset = httpx.get(f"{emu.base_url}{source}", timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 1000, source
