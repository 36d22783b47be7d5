"""`foley` is assembled from its parts (app/entrypoints/__init__.py): every command and group is
there, and the installed script and `python -m app.entrypoints` both reach it."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.entrypoints import foley, main

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = [
    "migrate",
    "api",
    "worker",
    "emulator",
    "up",
    "tenants",
    "keys",
    "prices",
    "usage",
    "webhooks",
]
GROUPS = {
    "tenants": ["create", "list", "budget", "limits", "suspend"],
    "keys": ["rotate", "create", "revoke"],
    "prices": ["list", "set"],
    "usage": ["reconcile"],
    "webhooks": ["list", "deliveries", "enable", "redeliver"],
}


def _listed(output: str) -> list[str]:
    """The command names of a help page's Commands panel, in order."""
    panel = output.split("Commands", 1)[1]
    names = []
    for line in panel.splitlines():
        words = line.strip("│ ").split()
        if words and words[0].isidentifier() and line.lstrip().startswith("│ " + words[0]):
            names.append(words[0])
    return names


def test_foley_lists_every_command_in_order(runner: CliRunner) -> None:
    result = runner.invoke(foley, ["--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert _listed(result.output) == COMMANDS


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_group_lists_its_commands(runner: CliRunner, group: str) -> None:
    result = runner.invoke(foley, [group, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert _listed(result.output) == GROUPS[group]


def test_emulator_command_is_the_emulators_own(runner: CliRunner) -> None:
    result = runner.invoke(foley, ["emulator", "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "fal emulator" in result.output
    assert "--data-dir" in result.output


def test_the_installed_script_is_main() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, attr = pyproject["project"]["scripts"]["foley"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def test_python_dash_m_runs_foley() -> None:
    # The e2e tests and the benchmarks start workers and APIs this way.
    result = subprocess.run(
        [sys.executable, "-m", "app.entrypoints", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "worker" in result.stdout
