"""The README is the front door: keep its configuration table and commands true."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`(FOLEY_[A-Z0-9_]+|FAL_KEY)`", README))
    for name in Settings.model_fields:
        env = "FAL_KEY" if name == "fal_key" else f"FOLEY_{name.upper()}"
        short = env.removesuffix("_MIN").removesuffix("_MAX")
        assert env in documented or short in documented or f"{short}_MIN" in README, env


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
