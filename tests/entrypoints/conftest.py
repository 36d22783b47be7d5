"""The `foley` command run in-process, in a directory of its own: no `.env` is read and the
settings are read afresh from the environment the test sets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.config import get_settings


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fresh_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOLEY_DATA_DIR", str(tmp_path / "data"))
    # Logging is configured once per process, onto the stderr of the moment: under CliRunner
    # that is a buffer closed when the command returns, and every later test would log into it.
    monkeypatch.setattr("app.entrypoints.settings.configure_logging", lambda *_: None)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_foley(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`foley` as an operator runs it: a process of its own, in ``cwd``, with none of the
    FOLEY_ or FAL_ variables of the test run unless ``env`` gives them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FOLEY_", "FAL_"))}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "app.entrypoints", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
