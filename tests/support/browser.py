"""A real headless Chromium for page tests: Debian's package (installed if missing; Playwright
never downloads a browser here), and a page that may reach loopback only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Belt and braces: no name resolves but loopback, on top of the page's routing.
LOOPBACK_ONLY_ARGS = ["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def chromium() -> Path:
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


async def only_loopback(page: Any, left_loopback: list[str]) -> None:
    """Route every request of ``page``: loopback (and data:, blob:) goes on, anything else is
    aborted and recorded in ``left_loopback``."""

    async def route(route, request) -> None:  # type: ignore[no-untyped-def]
        if urlsplit(request.url).hostname == "127.0.0.1" or request.url.startswith(
            ("data:", "blob:")
        ):
            await route.continue_()
        else:
            left_loopback.append(request.url)
            await route.abort()

    await page.route("**/*", route)
