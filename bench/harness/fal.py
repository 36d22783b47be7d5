"""The fal emulator as a benchmark sees it: a process started by `tests.support.emulator` and
an HTTP API, whose request log (`GET /_emulator/requests`: every request it received except
`/_emulator/*`) says what reached "fal". Nothing of the `emulator` package is imported here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.procs import Procs

REQUEST_LOG_SIZE = 500_000  # entries the emulator keeps (its default, 10 000, is too few)

# The kinds of request a gateway sends to fal, in the order they are printed.
KINDS = (
    "submit",
    "status",
    "status stream",
    "result",
    "cancel",
    "upload",
    "input fetch",
    "output download",
    "jwks",
    "platform",
    "other",
)


def start_emulator(
    procs: Procs,
    data_dir: Path,
    *,
    fast: bool = True,
    concurrency: int | None = None,
    run_time_s: float = 0.0,
    log_size: int = REQUEST_LOG_SIZE,
    cpu: int | None = None,
    args: Iterable[str] = (),
) -> Any:
    """`python -m emulator` on a free loopback port (seed 0), stopped with the run. `run_time_s`
    is the simulated compute time of every request (`--run-time`: in fast mode a request with
    none completes within its submit); `log_size` entries of the request log are kept."""
    from tests.support.emulator import start_emulator as start

    extra = [*args, *(["--run-time", f"{run_time_s:g}"] if run_time_s > 0 else [])]
    emu = start(
        data_dir,
        fast=fast,
        concurrency=concurrency,
        seed=0,
        cpu=cpu,
        args=extra,
        env={"FOLEY_EMULATOR_REQUEST_LOG_SIZE": str(log_size)},
    )
    procs.emulators.append(emu)
    return emu


def logged_at(entry: dict[str, Any]) -> float:
    """A request-log entry's `at` (when the request reached the emulator's ASGI app), as
    time.time()."""
    return datetime.fromisoformat(entry["at"]).timestamp()


def request_kind(entry: dict[str, Any], input_paths: frozenset[str] = frozenset()) -> str:
    """What a request-log entry was, from its method and path (fal's URL shapes); a GET of a
    CDN file in `input_paths` is a tenant's input fetched from there, any other an output."""
    method, path = entry["method"], entry["path"]
    if "/requests/" in path:
        if path.endswith("/status/stream"):
            return "status stream"
        if path.endswith("/status"):
            return "status"
        if path.endswith("/cancel"):
            return "cancel"
        return "result"
    if path.startswith("/files/") and method in ("GET", "HEAD"):
        return "input fetch" if path in input_paths else "output download"
    if path.startswith(("/storage/", "/files/upload")):
        return "upload"
    if method == "POST" and entry.get("model"):
        return "submit"
    if path == "/.well-known/jwks.json":
        return "jwks"
    if path.startswith("/v1/models"):
        return "platform"
    return "other"


def count_requests(
    entries: Iterable[dict[str, Any]], input_paths: frozenset[str] = frozenset()
) -> Counter[str]:
    return Counter(request_kind(e, input_paths) for e in entries)


def webhook_outcomes(emu: Any) -> Counter[str]:
    """The emulator's webhook delivery attempts by outcome (delivered, retrying, dropped ...)."""
    return Counter(a.get("outcome") or "?" for a in emu.webhooks())
