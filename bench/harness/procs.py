"""Child processes: spawned in a session of their own, logged to a file, stopped by their pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """A run cannot go on: printed, and the script exits 1 (after its cleanup)."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check(self) -> None:
        """BenchError (with the log's tail) when the process has exited."""
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with {self.popen.returncode}; log {self.log}:\n{self.tail()}"
            )


@dataclass
class Procs:
    """Every child a run started; `stop_all` runs at the end of the run, whatever happened."""

    items: list[Proc] = field(default_factory=list)
    emulators: list[Any] = field(default_factory=list)  # tests.support.emulator.EmulatorProcess

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def serve(
        self, name: str, cmd: list[str], env: dict[str, str], log: Path, health_url: str
    ) -> Proc:
        """Spawn an HTTP server and wait until `health_url` answers 200."""
        proc = self.spawn(name, cmd, env, log)
        wait_http(proc, health_url)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        if proc in self.items:
            self.items.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.items)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for emu in self.emulators:
            with contextlib.suppress(Exception):
                emu.stop()
        self.emulators.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_http(proc: Proc, url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(
        f"{proc.name} did not answer {url} within {timeout:.0f} s; log {proc.log}:\n{proc.tail()}"
    )


def taskset(core: int | None) -> list[str]:
    """The command prefix pinning a process to `core` (nothing when None or no taskset)."""
    if core is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(core)]


def unpin(pid: int) -> None:
    """Let a pinned process use every core from now on."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, set(range(os.cpu_count() or 1)))


def uvicorn_cmd(app: str, port: int, *extra: str) -> list[str]:
    """A uvicorn factory on loopback as the gateway runs it: uvloop, httptools, no access log."""
    return [
        PY, "-m", "uvicorn", app, "--factory", "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        *extra,
    ]  # fmt: skip


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any FOLEY_* or FAL_KEY of the caller's shell, plus
    `settings`: a child sees only this run's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLEY_") and k != "FAL_KEY"}
    return env | settings
