"""The process commands refuse what they cannot run, before they touch a database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.entrypoints import foley


@pytest.mark.usefixtures("fresh_settings")
def test_worker_needs_a_fal_key(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("FOLEY_FAL_KEY", raising=False)
    result = runner.invoke(foley, ["worker"])
    assert result.exit_code == 2
    assert "FAL_KEY is not set" in result.output
