"""Configuration: CLI flags, FOLEY_EMULATOR_* variables, persisted admin key, the banner."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from emulator.config import Distribution, EmulatorSettings
from emulator.state import Emulator
from tests.support.emulator import EmulatorProcess, running_emulator


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator configured by flags and FOLEY_EMULATOR_* variables."""
    env = {
        "FOLEY_EMULATOR_CONCURRENCY": "7",
        "FOLEY_EMULATOR_FAILURE_RATES": "runner_disconnected=0.25,internal_error=0.05",
        "FOLEY_EMULATOR_SSE_KEEPALIVE_S": "5",
        "FOLEY_EMULATOR_WEBHOOK_RETRY_SCHEDULE": "1,2,3",
        "FOLEY_EMULATOR_TAG_REPORTING": "true",
    }
    args = [
        "--sse-keepalive-s", "2",
        "--queue-wait", "0.5..1",
        "--ingress-error", "503=0.1",
        "--run-time-model", "fal-ai/thinksound=3",
    ]  # fmt: skip
    with running_emulator(
        tmp_path_factory.mktemp("configured"),
        fast=True,
        seed=9,
        keys=["alpha", "beta"],
        args=args,
        env=env,
    ) as emu:
        yield emu


def test_flags_and_environment_configure_the_emulator(configured: EmulatorProcess) -> None:
    knobs = configured.state()["knobs"]
    assert configured.fal_key == "alpha"
    url = f"{configured.base_url}/fal-ai/thinksound"
    assert httpx.post(url, json={}, headers={"Authorization": "Key gamma"}).status_code == 401
    assert knobs["concurrency"] == 7
    assert knobs["failure_rates"] == {"runner_disconnected": 0.25, "internal_error": 0.05}
    assert knobs["sse_keepalive_s"] == 2.0  # the flag wins over the environment
    assert knobs["webhook_retry_schedule"] == [1.0, 2.0, 3.0]
    assert knobs["queue_wait"] == {"low": 0.5, "high": 1.0}
    assert knobs["ingress_error_rates"] == {"503": 0.1}
    assert knobs["run_time_by_model"] == {"fal-ai/thinksound": {"low": 3.0, "high": 3.0}}
    assert (knobs["keys"], knobs["seed"]) == (["alpha", "beta"], 9)
    assert knobs["tag_reporting"] is True
    banner = configured.log_path.read_text()
    assert "fal emulator ready at" in banner and configured.admin_key in banner


def test_restart_keeps_the_webhook_signing_key(configured: EmulatorProcess) -> None:
    before = httpx.get(f"{configured.base_url}/.well-known/jwks.json").json()
    configured.restart()
    after = httpx.get(f"{configured.base_url}/.well-known/jwks.json").json()
    assert before == after
    assert len(base64.urlsafe_b64decode(before["keys"][0]["x"] + "==")) == 32
    key_file = configured.data_dir / "webhook_ed25519.pem"
    assert key_file.stat().st_mode & 0o077 == 0


def test_admin_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = EmulatorSettings(data_dir=tmp_path)
    first = Emulator(settings).admin_key
    assert first.startswith("emu-admin-")
    assert Emulator(settings).admin_key == first
    assert Emulator(EmulatorSettings(data_dir=tmp_path, admin_key="given")).admin_key == "given"


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [(2, 2.0, 2.0), ("1.5", 1.5, 1.5), ("0.5..3", 0.5, 3.0), ([1, 2], 1.0, 2.0)],
)
def test_distribution_spellings(spec: object, low: float, high: float) -> None:
    parsed = Distribution.model_validate(spec)
    assert (parsed.low, parsed.high) == (low, high)


@pytest.mark.parametrize("spec", ["3..1", "soon", -1, True])
def test_distribution_rejects_nonsense(spec: object) -> None:
    with pytest.raises(ValidationError):
        Distribution.model_validate(spec)


def test_public_url_is_advertised(tmp_path: Path) -> None:
    settings = EmulatorSettings(data_dir=tmp_path, public_url="http://emulator.local:9000/")
    assert settings.base_url() == "http://emulator.local:9000"
    wildcard = EmulatorSettings(data_dir=tmp_path, host="0.0.0.0", port=8765)  # noqa: S104
    assert wildcard.base_url() == "http://127.0.0.1:8765"
