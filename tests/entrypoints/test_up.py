"""`foley up`: for development only; it checks its port before it starts anything, records the
emulator it starts for the operator's commands, and a requested stop is exit status 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.entrypoints import foley
from tests.conftest import RUN_ID
from tests.entrypoints.conftest import run_foley
from tests.support.database import create_database, drop_database
from tests.support.emulator import free_port


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


def test_up_with_its_port_taken_says_so_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"FOLEY_DATA_DIR": str(tmp_path / "data"), "FOLEY_PORT": str(port)}

        result = run_foley("up", cwd=tmp_path, env=env)

    assert result.returncode == 1
    assert "Foley is up." not in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"foley: port {port} on 127.0.0.1 is not available (Address already in use); stop what "
        "uses it or choose another port: `make up FOLEY_PORT=8001` or `foley up --port 8001`"
    ]
    assert not (tmp_path / "data").exists()  # no emulator, no database, no secrets


async def test_up_serves_reconciles_with_its_emulator_and_stops_with_status_0(
    pg_server: str, tmp_path: Path
) -> None:
    name = f"foley_up_{RUN_ID}"
    database = await create_database(pg_server, name, migrate=False)
    port, emulator_port = free_port(), free_port()
    # What `make up` sets: nothing about fal. `foley up` starts the emulator and records it.
    env = {
        "FOLEY_DATABASE_URL": database,
        "FOLEY_DATA_DIR": str(tmp_path / "data"),
        "FOLEY_PORT": str(port),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FOLEY_", "FAL_"))}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "app.entrypoints", "up", "--emulator-port", str(emulator_port)],
        cwd=tmp_path,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        today = datetime.now(UTC).date()
        reconcile = run_foley(
            "usage", "reconcile", "--from", str(today), "--to", str(today + timedelta(days=1)),
            cwd=tmp_path,
            env={k: env[k] for k in ("FOLEY_DATABASE_URL", "FOLEY_DATA_DIR")},
        )  # fmt: skip
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
        assert "no differences" in reconcile.stdout
        # ...and through the API (the console's page), which has the emulator's admin key too
        admin = (tmp_path / "data" / "admin_token").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get(
                "/v1/admin/reconcile",
                params={"from": str(today), "to": str(today + timedelta(days=1))},
                headers={"Authorization": f"Bearer {admin}"},
            )
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        await drop_database(pg_server, name)

    assert proc.returncode == 0, err
    assert "Foley is up." in out
    with pytest.raises(httpx.TransportError):  # the emulator stopped with it
        httpx.get(f"http://127.0.0.1:{emulator_port}/.well-known/jwks.json", timeout=2)


async def _wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"foley up exited with {proc.returncode}:\n{out}\n{err}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{url} not ready after {timeout} s"
            await asyncio.sleep(0.2)
