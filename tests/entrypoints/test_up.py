"""`foley up` is for development only."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.entrypoints import foley


@pytest.mark.usefixtures("fresh_settings")
def test_up_refuses_production(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLEY_ENV", "production")
    monkeypatch.setenv("FAL_KEY", "a-real-fal-key")
    monkeypatch.setenv("FOLEY_ADMIN_TOKEN", "a-real-admin-token")
    monkeypatch.setenv("FOLEY_WEBHOOK_SECRET", "a-real-webhook-secret")
    monkeypatch.setenv("FOLEY_DATABASE_URL", "postgresql://foley@127.0.0.1:1/foley")
    result = runner.invoke(foley, ["up"])
    assert result.exit_code == 2
    assert "`foley up` is for development" in result.output
