"""What a process loads when it starts: the API's app and the worker's modules, in a fresh
interpreter. Heavy libraries only some jobs or some deployments use are imported where they
are used, not at start (scipy.signal alone was a third of every process's start)."""

from __future__ import annotations

import json
import subprocess
import sys

# Loaded only by what uses them: loudness (a job that builds a soundtrack), S3 storage.
LOADED_ON_USE = ("scipy", "pyloudnorm", "boto3", "s3transfer")


def _loaded_at_start(*modules: str) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {list(LOADED_ON_USE)!r} if m in sys.modules)))"
    )
    done = subprocess.run(  # noqa: S603 (this interpreter, our code)
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_api_and_the_worker_start_without_the_libraries_only_some_jobs_use() -> None:
    assert _loaded_at_start("app.main", "app.entrypoints.processes", "app.worker.runner") == []
