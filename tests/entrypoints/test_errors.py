"""A failing `foley` command says what is wrong in one line on stderr and exits 1: never a
traceback (app/entrypoints/errors.py). Real processes, as an operator runs them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import RUN_ID
from tests.entrypoints.conftest import run_foley
from tests.support.database import create_database, drop_database

UNKNOWN = str(uuid.UUID(int=7))


def _one_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


@pytest.mark.parametrize(
    "args",
    [
        ("tenants", "budget", UNKNOWN, "--usd", "5"),
        ("tenants", "suspend", UNKNOWN),
        ("tenants", "limits", UNKNOWN, "--max-in-flight", "2"),
        ("keys", "create", UNKNOWN),
    ],
)
def test_an_unknown_tenant_is_one_line(database_url: str, tmp_path: Path, args: tuple) -> None:
    result = run_foley(*args, cwd=tmp_path, env={"FOLEY_DATABASE_URL": database_url})

    assert _one_line(result) == f"foley: No tenant {UNKNOWN}."


async def test_a_database_never_migrated_is_one_line_that_says_what_to_do(
    pg_server: str, tmp_path: Path
) -> None:
    name = f"foley_cli_empty_{RUN_ID}"
    url = await create_database(pg_server, name, migrate=False)
    try:
        result = run_foley("tenants", "list", cwd=tmp_path, env={"FOLEY_DATABASE_URL": url})
    finally:
        await drop_database(pg_server, name)

    line = _one_line(result)
    assert 'relation "tenants" does not exist' in line
    assert "foley migrate" in line


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"FOLEY_DATABASE_URL": "postgresql://foley@127.0.0.1:1/foley"}

    line = _one_line(run_foley("keys", "create", UNKNOWN, cwd=tmp_path, env=env))

    assert line.startswith("foley: cannot reach the database:")


def test_an_invalid_value_is_one_line(database_url: str, tmp_path: Path) -> None:
    env = {"FOLEY_DATABASE_URL": database_url}

    line = _one_line(
        run_foley("tenants", "budget", UNKNOWN, "--period", "fortnight", cwd=tmp_path, env=env)
    )

    assert line.startswith("foley: invalid value: budget_period")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {"FOLEY_DATABASE_URL": "postgresql://foley@127.0.0.1:1/foley", "FOLEY_DEBUG": "1"}

    result = run_foley("keys", "create", UNKNOWN, cwd=tmp_path, env=env)

    assert result.returncode == 1
    assert "Traceback" in result.stderr or "╭" in result.stderr  # rich's or Python's


def test_outside_any_installation_nothing_is_created(tmp_path: Path) -> None:
    line = _one_line(run_foley("tenants", "list", cwd=tmp_path))

    assert line == (
        f"foley: no Foley data found at {tmp_path.resolve() / '.foley'}; run `foley up` "
        "(or `foley migrate`) first, or set FOLEY_DATA_DIR / FOLEY_DATABASE_URL"
    )
    assert list(tmp_path.iterdir()) == []


def test_from_a_subdirectory_of_a_checkout_its_data_dir_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "foley"\n')
    (tmp_path / "docs" / "api").mkdir(parents=True)

    line = _one_line(run_foley("prices", "list", cwd=tmp_path / "docs" / "api"))

    assert f"no Foley data found at {tmp_path.resolve() / '.foley'};" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "pyproject.toml"]


def test_reconcile_without_a_fal_key_or_an_emulator_says_what_it_needs(
    database_url: str, tmp_path: Path
) -> None:
    env = {"FOLEY_DATABASE_URL": database_url, "FOLEY_DATA_DIR": str(tmp_path)}

    line = _one_line(run_foley("usage", "reconcile", cwd=tmp_path, env=env))

    assert line == (
        "foley: set FOLEY_FAL_ADMIN_KEY (or FAL_KEY) to read fal's usage; with the emulator, "
        f"run `foley up` first (it records the emulator in {tmp_path})"
    )
