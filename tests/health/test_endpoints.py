"""Readiness is probed every few seconds: it answers from the database without a log line."""

from __future__ import annotations

import logging

import httpx
import pytest


async def test_readyz_logs_nothing(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        r = await api.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "migrations": "ok"}

    assert [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if r.name.startswith("alembic")
    ] == []
