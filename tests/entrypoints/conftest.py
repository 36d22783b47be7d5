"""The `foley` command run in-process, in a directory of its own: no `.env` is read and the
settings are read afresh from the environment the test sets."""

from __future__ import annotations

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
