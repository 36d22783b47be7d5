"""Start the fal emulator as a real subprocess for tests (emulator and gateway tests alike).

    emu = start_emulator(tmp_path / "emu", fast=True)
    try:
        httpx.post(f"{emu.base_url}/fal-ai/thinksound", headers=emu.auth_headers, json={...})
        emu.control(concurrency=1, failure_rates={"runner_disconnected": 1.0})
        emu.requests(method="POST")  # what reached "fal"
    finally:
        emu.stop()

The process writes its output to `<data_dir>/emulator.log` (shown in the error when it fails
to start).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FAL_KEY = "test-fal-key"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmulatorProcess:
    base_url: str
    admin_key: str
    fal_key: str
    data_dir: Path
    port: int
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # --- headers ---------------------------------------------------------------------------
    @property
    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Key <fal_key>`, what fal expects."""
        return {"Authorization": f"Key {self.fal_key}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def log_path(self) -> Path:
        return self.data_dir / "emulator.log"

    # --- control endpoint --------------------------------------------------------------------
    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(
            method, f"{self.base_url}{path}", headers=self.admin_headers, timeout=10, **kwargs
        )
        response.raise_for_status()
        return response.json()

    def control(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs at run time (partial update); returns every knob's new value."""
        result: dict[str, Any] = self._admin("POST", "/_emulator/control", json=knobs)
        return result

    def knobs(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/_emulator/control")
        return result

    def reset(self, *, jobs: bool = True, seed: int | None = None) -> None:
        """Startup knobs again; clears the request log, webhook attempts, usage and requests."""
        self._admin("POST", "/_emulator/reset", json={"jobs": jobs, "seed": seed})

    def requests(self, **filters: Any) -> list[dict[str, Any]]:
        """The request log: every HTTP request received (filters: model, method, path_prefix,
        request_id, since_seq)."""
        params = {k: v for k, v in filters.items() if v is not None}
        result: list[dict[str, Any]] = self._admin("GET", "/_emulator/requests", params=params)[
            "requests"
        ]
        return result

    def submits(self, model: str | None = None) -> list[dict[str, Any]]:
        """The request-log entries of queue submits (POSTs on a model id)."""
        return [e for e in self.requests(method="POST", model=model) if e["model"] is not None]

    def job(self, request_id: str) -> dict[str, Any]:
        """One request as the emulator saw it: effective input, logs, result, usage."""
        result: dict[str, Any] = self._admin("GET", f"/_emulator/jobs/{request_id}")
        return result

    def webhooks(self, request_id: str | None = None) -> list[dict[str, Any]]:
        params = {"request_id": request_id} if request_id else {}
        result: list[dict[str, Any]] = self._admin("GET", "/_emulator/webhooks", params=params)[
            "attempts"
        ]
        return result

    def usage_records(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._admin("GET", "/_emulator/usage")["records"]
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/_emulator/state")
        return result

    def upload(self, path: Path, content_type: str | None = None) -> str:
        """Put a local file on the emulator's CDN (fal's token + upload flow); returns its URL."""
        token = httpx.post(
            f"{self.base_url}/storage/auth/token?storage_type=fal-cdn-v3",
            headers=self.auth_headers,
            json={},
            timeout=10,
        ).json()
        response = httpx.post(
            f"{token['base_url']}/files/upload",
            content=path.read_bytes(),
            headers={
                "Authorization": f"{token['token_type']} {token['token']}",
                "Content-Type": content_type or "application/octet-stream",
                "X-Fal-File-Name": path.name,
            },
            timeout=30,
        )
        response.raise_for_status()
        url: str = response.json()["access_url"]
        return url

    # --- process -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def start(self, timeout: float = 60.0) -> None:
        """(Re)start the process with the same arguments, port and data directory."""
        if self.running:
            raise RuntimeError("emulator already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.args, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {self.process.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                if httpx.get(f"{self.base_url}/_emulator/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # between health checks, up to the deadline
        self.stop()
        raise TimeoutError(f"emulator not ready after {timeout} s:\n{self.log_path.read_text()}")

    def restart(self) -> None:
        self.stop()
        self.start()


def start_emulator(
    data_dir: Path,
    *,
    fast: bool = False,
    concurrency: int | None = None,
    seed: int | None = 0,
    admin_key: str | None = None,
    fal_key: str = DEFAULT_FAL_KEY,
    keys: Sequence[str] | None = None,
    port: int | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cpu: int | None = None,
    timeout: float = 60.0,
) -> EmulatorProcess:
    """Start `python -m emulator` on a free loopback port and wait until it answers.

    `args` are extra CLI flags (e.g. `["--run-time", "0.5"]`); `env` adds environment
    variables (e.g. `FOLEY_EMULATOR_*`); `cpu` pins the process to one core with `taskset`.
    """
    port = port or free_port()
    admin_key = admin_key or f"test-admin-{secrets.token_hex(8)}"
    command = [
        sys.executable, "-m", "emulator",
        "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--admin-key", admin_key,
    ]  # fmt: skip
    if fast:
        command.append("--fast")
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if seed is not None:
        command += ["--seed", str(seed)]
    if keys is not None:
        command += ["--keys", ",".join(keys)]
        if keys and fal_key not in keys:
            fal_key = keys[0]
    command += list(args)
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FOLEY_EMULATOR_")} | (
        env or {}
    )
    emu = EmulatorProcess(
        base_url=f"http://127.0.0.1:{port}",
        admin_key=admin_key,
        fal_key=fal_key,
        data_dir=data_dir,
        port=port,
        args=command,
        env=full_env,
    )
    emu.start(timeout)
    return emu


@contextmanager
def running_emulator(data_dir: Path, **options: Any) -> Iterator[EmulatorProcess]:
    emu = start_emulator(data_dir, **options)
    try:
        yield emu
    finally:
        emu.stop()
