from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.config import Settings, find_checkout, get_settings

REAL = SecretStr("a-real-secret-value-1234")


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ValidationError, match="admin_token"):
        Settings(
            env="production",
            admin_token=SecretStr("changeme"),
            webhook_secret=REAL,
            fal_key=REAL,
            database_url="postgresql://u@h/d",
        )
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(
            env="production", admin_token=REAL, fal_key=REAL, database_url="postgresql://u@h/d"
        )
    with pytest.raises(ValidationError, match="database_url"):
        Settings(env="production", admin_token=REAL, webhook_secret=REAL, fal_key=REAL)
    ok = Settings(
        env="production",
        admin_token=REAL,
        webhook_secret=REAL,
        fal_key=REAL,
        database_url="postgresql://u@h/d",
    )
    assert ok.admin_token == REAL


def test_development_starts_with_nothing_set() -> None:
    s = Settings(_env_file=None)
    assert s.uses_embedded_db and s.admin_token is None


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("2.5", 2.5), ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), (7, 7), ("PT1M", 60)],
)
def test_durations_read_like_people_write_them(given: object, seconds: float) -> None:
    assert Settings(lease_duration=given).lease_duration == timedelta(seconds=seconds)


def test_urls_are_validated_and_fal_key_read_from_its_own_name(monkeypatch) -> None:
    monkeypatch.setenv("FAL_KEY", "fal-123")
    s = Settings(fal_queue_url="http://127.0.0.1:8765/", _env_file=None)
    assert s.fal_queue_url == "http://127.0.0.1:8765"
    assert s.fal_key is not None and s.fal_key.get_secret_value() == "fal-123"
    assert s.jwks_url == "https://rest.fal.ai/.well-known/jwks.json"
    with pytest.raises(ValidationError):
        Settings(fal_queue_url="ftp://x")


def _checkout(root: Path, name: str = "foley") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return root


def test_the_data_dir_and_env_file_are_the_checkouts_from_any_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = _checkout(tmp_path / "foley")
    (checkout / ".env").write_text("FOLEY_LOG_LEVEL=DEBUG\n")
    _checkout(checkout / "vendor" / "other", name="other")  # a pyproject that is not ours
    deep = checkout / "vendor" / "other" / "docs"
    deep.mkdir()
    monkeypatch.chdir(deep)
    monkeypatch.delenv("FOLEY_DATA_DIR", raising=False)
    monkeypatch.delenv("FOLEY_LOG_LEVEL", raising=False)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()

    assert find_checkout() == checkout.resolve()
    assert settings.data_dir == checkout.resolve() / ".foley"
    assert settings.log_level == "DEBUG"


def test_outside_a_checkout_the_data_dir_is_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FOLEY_DATA_DIR", raising=False)

    assert find_checkout() is None
    assert Settings(_env_file=None).data_dir == tmp_path.resolve() / ".foley"
    monkeypatch.setenv("FOLEY_DATA_DIR", "/srv/foley")
    assert Settings(_env_file=None).data_dir == Path("/srv/foley")
